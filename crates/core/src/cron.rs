//! A croniter-compatible five-field cron evaluator with Airflow's time-zone rules.
//!
//! We evaluate cron ourselves instead of pulling in a crate so that every corner that decides
//! *when a DAG runs* (DST gaps and folds, `L`, `#`, the day-of-month/day-of-week OR rule,
//! croniter's normalisation quirks) is written down here and pinned by tests.

use chrono::{
    DateTime, Datelike, Duration as ChronoDuration, LocalResult, NaiveDate, NaiveDateTime,
    NaiveTime, Offset, TimeZone, Timelike, Utc,
};
use chrono_tz::Tz;

/// croniter gives up after this many years without a match (`max_years_between_matches`).
const MAX_YEARS_BETWEEN_MATCHES: i32 = 50;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Nth {
    /// `MON#2`: the n-th such weekday of the month (1-5).
    N(u8),
    /// `L5`: the last such weekday of the month.
    Last,
}

/// A parsed five-field cron expression (`minute hour day-of-month month day-of-week`).
///
/// Syntax is croniter's (what Airflow uses): `*`, lists `1,15`, ranges `1-5` (a reversed range
/// such as `FRI-MON` wraps around; a range whose ends are equal such as `MON-MON` means the
/// whole field, as in croniter), steps `*/15`, `1-30/5`, `5/15` (= `5-59/15`), month and weekday
/// names (`JAN`, `mon`), `?` as `*` in the day fields, `L` (last day) in day-of-month, and in
/// day-of-week `7` = Sunday, `MON#1` (first Monday) and `L5` (last Friday). When both
/// day-of-month and day-of-week are restricted a day matches if *either* matches (croniter's
/// default `day_or=True`); a field that lists every value counts as `*`, except that a full
/// day-of-month (or day-of-week) list stays restricted while the other day field is written
/// without a `*` — exactly croniter's normalisation. With `#`/`L` in day-of-week croniter
/// only looks at the weekday rule when day-of-month is also restricted; we do the same.
///
/// # Time zones and DST (Airflow's `CronMixin._get_next` / `_get_prev`)
///
/// The expression is evaluated on the wall clock of the DAG's time zone: the UTC instant is
/// turned into a naive local time, the next (or previous) matching naive local time is found,
/// and it is turned back into an instant in one of two ways:
///
/// * **The hour field is `*`** (the schedule fires at least once every hour, e.g. `0 * * * *`,
///   `*/10 * * * *`): the wall-clock distance between the local start and the naive match is
///   added to the start *instant*. So runs stay evenly spaced in real time across both
///   transitions. On the fall-back day (Europe/Amsterdam, last Sunday of October, 03:00 CEST
///   → 02:00 CET) `0 * * * *` fires at 02:00 CEST (00:00 UTC) *and* at 02:00 CET (01:00 UTC):
///   the repeated hour runs twice, one hour apart. On the spring-forward day (last Sunday of
///   March, 02:00 CET → 03:00 CEST) it fires at 01:00 CET (00:00 UTC) and then 03:00 CEST
///   (01:00 UTC); there is no 02:00 run because that hour does not exist.
/// * **Otherwise** (a fixed set of hours, e.g. `30 2 * * *`, `0 0 * * *`): the naive match is
///   localised with Airflow's `make_aware`, which sets `fold=1`:
///   - a wall time that occurs twice (fall-back) resolves to the *second* occurrence, so
///     `30 2 * * *` on 2024-10-27 in Europe/Amsterdam fires once, at 02:30 CET = 01:30 UTC
///     (not at 02:30 CEST = 00:30 UTC);
///   - a wall time that does not exist (spring-forward) is moved forward by the size of the
///     gap, so `30 2 * * *` on 2024-03-31 in Europe/Amsterdam fires once, at 03:30 CEST =
///     01:30 UTC. The run is not skipped and not moved to the previous day.
///
/// A time zone without DST (UTC) behaves like plain croniter on UTC.
///
/// # Deviation from croniter
///
/// croniter 6 does not clamp day-of-month values to the length of the month when looking for
/// the next day: `0 0 1,31 * *` evaluated from 2025-02-28 jumps three days ahead to March 3
/// and so returns March 31, skipping March 1 (the same for `*/10`, `1,15,30`, ... late in
/// February). We return March 1, which is what the expression says; this is the only known
/// difference (pinned in the tests). An expression that never fires (`0 0 30 2 *`) is
/// rejected by `validate_cron`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CronExpr {
    /// The five fields after preset expansion, joined by single spaces, as written.
    source: String,
    minutes: u64,
    hours: u32,
    /// Bits 0..=31 as croniter collects them (0 can come from a range such as `0-5`).
    dom: u64,
    dom_last: bool,
    dom_star: bool,
    /// Bits 0..=12.
    months: u16,
    dows: u8,
    dow_star: bool,
    nth: Vec<(u8, Nth)>,
    hour_star: bool,
}

/// `@hourly`→`0 * * * *`, `@daily`/`@midnight`, `@weekly`, `@monthly`, `@quarterly`
/// (`0 0 1 */3 *`), `@yearly`/`@annually`. Case-insensitive, like croniter.
pub fn expand_preset(expr: &str) -> Option<&'static str> {
    match expr.trim().to_ascii_lowercase().as_str() {
        "@hourly" => Some("0 * * * *"),
        "@daily" | "@midnight" => Some("0 0 * * *"),
        "@weekly" => Some("0 0 * * 0"),
        "@monthly" => Some("0 0 1 * *"),
        "@quarterly" => Some("0 0 1 */3 *"),
        "@yearly" | "@annually" => Some("0 0 1 1 *"),
        _ => None,
    }
}

const PRESETS: &str =
    "@hourly, @daily, @midnight, @weekly, @monthly, @quarterly, @yearly, @annually";

#[derive(Clone, Copy)]
struct Field {
    name: &'static str,
    min: u32,
    max: u32,
    allowed: &'static str,
}

const FIELDS: [Field; 5] = [
    Field {
        name: "minute",
        min: 0,
        max: 59,
        allowed: "0-59",
    },
    Field {
        name: "hour",
        min: 0,
        max: 23,
        allowed: "0-23",
    },
    Field {
        name: "day-of-month",
        min: 1,
        max: 31,
        allowed: "1-31, `L` (last day of the month) or `?`",
    },
    Field {
        name: "month",
        min: 1,
        max: 12,
        allowed: "1-12 or JAN-DEC",
    },
    Field {
        name: "day-of-week",
        min: 0,
        max: 6,
        allowed: "0-7 or SUN-SAT (0 and 7 are Sunday), `MON#2` (2nd Monday), `L5` (last Friday) or `?`",
    },
];

const SYNTAX: &str = "`*`, a value, a list `1,2`, a range `1-5` or a step `*/15`, `1-30/5`";
const MONTHS: [&str; 12] = [
    "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
];
const WEEKDAYS: [&str; 7] = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"];

const DOM: usize = 2;
const DOW: usize = 4;

/// One element of a field as croniter expands it: a number or `L` (day-of-month only).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum Item {
    Num(u32),
    Last,
}

struct FieldError<'a> {
    expr: &'a str,
    field: Field,
}

impl FieldError<'_> {
    fn err(&self, what: impl std::fmt::Display) -> String {
        format!(
            "invalid cron expression `{}`: {} field {}; allowed: {}, written as {}",
            self.expr, self.field.name, what, self.field.allowed, SYNTAX
        )
    }
}

impl CronExpr {
    /// Parses a five-field expression or a preset (`@daily`). Errors name the bad field and
    /// what it allows.
    pub fn parse(expr: &str) -> Result<CronExpr, String> {
        let trimmed = expr.trim();
        let text: String = match expand_preset(trimmed) {
            Some(p) => p.to_string(),
            None => {
                if trimmed.starts_with('@') {
                    return Err(format!(
                        "unknown cron preset `{trimmed}`; allowed: {PRESETS}"
                    ));
                }
                trimmed.split_whitespace().collect::<Vec<_>>().join(" ")
            }
        };
        if text.is_empty() {
            return Err(format!(
                "empty cron expression; expected five fields `minute hour day-of-month month day-of-week` or a preset ({PRESETS})"
            ));
        }
        let raw: Vec<&str> = text.split(' ').collect();
        if raw.len() != 5 {
            let hint = if raw.len() == 6 || raw.len() == 7 {
                " (seconds and year fields are not supported, like in Airflow)"
            } else {
                ""
            };
            return Err(format!(
                "invalid cron expression `{text}`: expected 5 fields `minute hour day-of-month month day-of-week`, got {}{hint}",
                raw.len()
            ));
        }
        let lower: Vec<String> = raw.iter().map(|f| f.to_ascii_lowercase()).collect();
        let mut sets: Vec<std::collections::BTreeSet<Item>> = Vec::with_capacity(5);
        let mut nth: Vec<(u8, Nth)> = Vec::new();
        let mut stars = [false; 5];
        for (i, f) in lower.iter().enumerate() {
            let fe = FieldError {
                expr: &text,
                field: FIELDS[i],
            };
            let (set, field_nth) = expand_field(i, f, &fe)?;
            let len_means_all = (FIELDS[i].max - FIELDS[i].min + 1) as usize;
            let mut star = set.len() == 1 && set.contains(&Item::Num(u32::MAX));
            if !star && set.len() == len_means_all {
                // croniter keeps a full day list restricted while the other day field has no
                // `*`, so that the OR rule still applies to it.
                let keep = (i == DOM && !lower[DOW].contains('*'))
                    || (i == DOW && !lower[DOM].contains('*'));
                star = !keep;
            }
            stars[i] = star;
            nth.extend(field_nth);
            sets.push(set);
        }
        if !nth.is_empty() {
            let plain: Vec<u32> = sets[DOW]
                .iter()
                .filter_map(|it| match it {
                    Item::Num(v) if *v != u32::MAX => Some(*v),
                    _ => None,
                })
                .filter(|v| !nth.iter().any(|(d, _)| *d as u32 == *v))
                .collect();
            if !plain.is_empty() && sets[DOW].len() != 7 {
                return Err(format!(
                    "invalid cron expression `{text}`: day-of-week field mixes plain weekdays with `#`/`L` weekdays, which is not supported; use one form"
                ));
            }
        }
        let bits = |i: usize| -> u64 {
            sets[i].iter().fold(0u64, |acc, it| match it {
                Item::Num(v) if *v < 64 => acc | (1 << v),
                _ => acc,
            })
        };
        let full = |i: usize| -> u64 {
            (FIELDS[i].min..=FIELDS[i].max).fold(0u64, |acc, v| acc | (1 << v))
        };
        let pick = |i: usize| if stars[i] { full(i) } else { bits(i) };
        nth.sort_by_key(|(d, n)| {
            (
                *d,
                matches!(n, Nth::Last),
                if let Nth::N(k) = n { *k } else { 0 },
            )
        });
        nth.dedup();
        let cron = CronExpr {
            source: text.clone(),
            minutes: pick(0),
            hours: pick(1) as u32,
            dom: pick(DOM),
            dom_last: !stars[DOM] && sets[DOM].contains(&Item::Last),
            dom_star: stars[DOM],
            months: pick(3) as u16,
            dows: pick(DOW) as u8,
            dow_star: stars[DOW],
            nth,
            hour_star: stars[1],
        };
        if !cron.nth.is_empty() && !cron.dom_star && !cron.dow_star && !cron.dom_and_nth_ever() {
            // croniter evaluates the day-of-month half of the OR together with the `#`/`L`
            // weekday and fails when that combination never happens.
            return Err(format!(
                "invalid cron expression `{text}`: day-of-month `{}` never falls on day-of-week `{}`, which croniter cannot evaluate; write `*` in one of the two fields",
                raw[DOM], raw[DOW]
            ));
        }
        Ok(cron)
    }

    /// Whether some date matches month, day-of-month *and* the nth-weekday rule (28 years
    /// cover every calendar layout between 1901 and 2099).
    fn dom_and_nth_ever(&self) -> bool {
        let mut d = NaiveDate::from_ymd_opt(2000, 1, 1).expect("valid date");
        let end = NaiveDate::from_ymd_opt(2028, 1, 1).expect("valid date");
        while d < end {
            if self.month_ok(d.month()) && self.dom_ok(d) && self.nth_ok(d) {
                return true;
            }
            d = d.succ_opt().expect("in range");
        }
        false
    }

    /// Whether the expression fires at least once in 28 years (e.g. `0 0 30 2 *` never does).
    pub fn ever_fires(&self) -> bool {
        let start = NaiveDate::from_ymd_opt(2000, 1, 1)
            .expect("valid date")
            .and_hms_opt(0, 0, 0)
            .expect("valid time");
        self.naive_next(start).is_some_and(|t| t.year() < 2029)
    }

    /// The five fields, preset expanded, single-spaced.
    pub fn as_str(&self) -> &str {
        &self.source
    }

    fn month_ok(&self, month: u32) -> bool {
        self.months & (1 << month) != 0
    }

    fn dom_ok(&self, date: NaiveDate) -> bool {
        let day = date.day();
        self.dom & (1u64 << day) != 0
            || (self.dom_last && day == days_in_month(date.year(), date.month()))
    }

    fn nth_ok(&self, date: NaiveDate) -> bool {
        let day = date.day();
        let last = days_in_month(date.year(), date.month());
        let wd = date.weekday().num_days_from_sunday() as u8;
        self.nth.iter().any(|&(d, n)| {
            d == wd
                && match n {
                    Nth::N(k) => (day - 1) / 7 + 1 == k as u32,
                    Nth::Last => day + 7 > last,
                }
        })
    }

    fn day_ok(&self, date: NaiveDate) -> bool {
        let or_mode = !self.dom_star && !self.dow_star;
        if !self.nth.is_empty() {
            // croniter swaps its weekday step for the nth-weekday step whenever `#`/`L` is
            // present, also in the "day-of-week = *" half of the OR, so the OR reduces to the
            // weekday rule alone.
            return self.nth_ok(date) && (self.dom_star || or_mode || self.dom_ok(date));
        }
        let dom_ok = self.dom_ok(date);
        let dow_ok = self.dows & (1 << date.weekday().num_days_from_sunday()) != 0;
        if or_mode {
            dom_ok || dow_ok
        } else {
            (self.dom_star || dom_ok) && (self.dow_star || dow_ok)
        }
    }

    fn date_ok(&self, date: NaiveDate) -> bool {
        self.month_ok(date.month()) && self.day_ok(date)
    }

    /// First matching (hour, minute) at or after `from` minutes into the day.
    fn first_time_from(&self, from: u32) -> Option<NaiveTime> {
        let (h0, m0) = (from / 60, from % 60);
        for h in h0..24 {
            if self.hours & (1 << h) == 0 {
                continue;
            }
            let lo = if h == h0 { m0 } else { 0 };
            let mins = self.minutes & (u64::MAX << lo);
            if mins != 0 {
                return NaiveTime::from_hms_opt(h, mins.trailing_zeros(), 0);
            }
        }
        None
    }

    /// Last matching (hour, minute) at or before `to` minutes into the day.
    fn last_time_until(&self, to: u32) -> Option<NaiveTime> {
        let (h0, m0) = (to / 60, to % 60);
        for h in (0..=h0).rev() {
            if self.hours & (1 << h) == 0 {
                continue;
            }
            let hi = if h == h0 { m0 } else { 63 };
            let mins = self.minutes & (u64::MAX >> (63 - hi));
            if mins != 0 {
                return NaiveTime::from_hms_opt(h, 63 - mins.leading_zeros(), 0);
            }
        }
        None
    }

    /// croniter `get_next` on a naive datetime: the first matching minute strictly after the
    /// minute containing `t`.
    pub fn naive_next(&self, t: NaiveDateTime) -> Option<NaiveDateTime> {
        let start = truncate_minute(t) + ChronoDuration::minutes(1);
        let mut date = start.date();
        let mut from = start.hour() * 60 + start.minute();
        let limit_year = start.year() + MAX_YEARS_BETWEEN_MATCHES + 1;
        while date.year() <= limit_year {
            if self.date_ok(date)
                && let Some(time) = self.first_time_from(from)
            {
                return Some(date.and_time(time));
            }
            date = date.succ_opt()?;
            from = 0;
        }
        None
    }

    /// croniter `get_prev` on a naive datetime: the last matching minute strictly before `t`.
    pub fn naive_prev(&self, t: NaiveDateTime) -> Option<NaiveDateTime> {
        let floor = truncate_minute(t);
        let end = if floor == t {
            t - ChronoDuration::minutes(1)
        } else {
            floor
        };
        let mut date = end.date();
        let mut to = end.hour() * 60 + end.minute();
        let limit_year = end.year() - MAX_YEARS_BETWEEN_MATCHES - 1;
        while date.year() >= limit_year {
            if self.date_ok(date)
                && let Some(time) = self.last_time_until(to)
            {
                return Some(date.and_time(time));
            }
            date = date.pred_opt()?;
            to = 24 * 60 - 1;
        }
        None
    }

    /// Next fire time strictly after `after`, evaluated in `tz` wall-clock, DST-correct (see
    /// the type's documentation for the exact DST rules).
    pub fn next_after(&self, after: DateTime<Utc>, tz: Tz) -> Option<DateTime<Utc>> {
        let naive = after.with_timezone(&tz).naive_local();
        let scheduled = self.naive_next(naive)?;
        if self.hour_star {
            Some(after + (scheduled - naive))
        } else {
            Some(make_aware(scheduled, tz))
        }
    }

    /// Airflow's `_get_prev`: the latest fire time strictly before `before`.
    pub fn prev_before(&self, before: DateTime<Utc>, tz: Tz) -> Option<DateTime<Utc>> {
        let naive = before.with_timezone(&tz).naive_local();
        let scheduled = self.naive_prev(naive)?;
        if self.hour_star {
            Some(before - (naive - scheduled))
        } else {
            Some(make_aware(scheduled, tz))
        }
    }

    /// Latest fire time at or before `at` (for catchup=false and manual data intervals).
    /// This is Airflow's `_align_to_prev`: `at` itself when it is a fire time, else the
    /// previous one.
    pub fn prev_at_or_before(&self, at: DateTime<Utc>, tz: Tz) -> Option<DateTime<Utc>> {
        let prev = self.prev_before(at, tz)?;
        if self.next_after(prev, tz) == Some(at) {
            Some(at)
        } else {
            Some(prev)
        }
    }

    /// Airflow's `_align_to_next`: `at` itself when it is a fire time, else the next one.
    pub fn next_at_or_after(&self, at: DateTime<Utc>, tz: Tz) -> Option<DateTime<Utc>> {
        let next = self.next_after(at, tz)?;
        if self.prev_before(next, tz) == Some(at) {
            Some(at)
        } else {
            Some(next)
        }
    }
}

/// Airflow's `make_aware`: localise with `fold=1` through pendulum, i.e. the later of two
/// repeated wall times, and a wall time inside a gap moved forward by the gap's size.
fn make_aware(naive: NaiveDateTime, tz: Tz) -> DateTime<Utc> {
    match tz.from_local_datetime(&naive) {
        LocalResult::Single(t) => t.with_timezone(&Utc),
        LocalResult::Ambiguous(_, later) => later.with_timezone(&Utc),
        LocalResult::None => {
            // Inside a gap: pendulum adds (offset after - offset before) to the wall time and
            // reads it with the offset after, which is the wall time read with the offset
            // before. Fourteen hours before the wall time (read as UTC) is before the
            // transition for every real offset, and close enough to see the offset before it.
            let probe = naive - ChronoDuration::hours(14);
            let before = tz.offset_from_utc_datetime(&probe).fix().local_minus_utc();
            Utc.from_utc_datetime(&(naive - ChronoDuration::seconds(before as i64)))
        }
    }
}

fn truncate_minute(t: NaiveDateTime) -> NaiveDateTime {
    t.date()
        .and_hms_opt(t.hour(), t.minute(), 0)
        .expect("valid time")
}

pub(crate) fn days_in_month(year: i32, month: u32) -> u32 {
    let (ny, nm) = if month == 12 {
        (year + 1, 1)
    } else {
        (year, month + 1)
    };
    NaiveDate::from_ymd_opt(ny, nm, 1)
        .and_then(|d| d.pred_opt())
        .map(|d| d.day())
        .unwrap_or(31)
}

/// A field's expanded items and its nth-weekday entries.
type Expanded = (std::collections::BTreeSet<Item>, Vec<(u8, Nth)>);

/// The `*` marker in an expanded set.
const STAR: Item = Item::Num(u32::MAX);

/// Expands one field like croniter's `_expand`: returns the set of items (or `{STAR}`) and
/// the nth-weekday entries.
fn expand_field(index: usize, field: &str, fe: &FieldError<'_>) -> Result<Expanded, String> {
    let spec = FIELDS[index];
    let mut field = field.to_string();
    if field.contains('?') {
        if field != "?" {
            return Err(fe.err("uses `?` together with other characters"));
        }
        if index != DOM && index != DOW {
            return Err(
                fe.err("uses `?`, which only the day-of-month and day-of-week fields allow")
            );
        }
        field = "*".into();
    }
    let mut out = std::collections::BTreeSet::new();
    let mut nth_out = Vec::new();
    let mut queue: Vec<(String, Option<Nth>)> =
        field.split(',').map(|s| (s.to_string(), None)).collect();
    while let Some((mut e, mut nth)) = queue.pop() {
        if e.is_empty() {
            return Err(fe.err("has an empty list element"));
        }
        if index == DOW && nth.is_none() {
            if let Some((pre, n)) = e.split_once('#') {
                let k: u8 = n
                    .parse()
                    .ok()
                    .filter(|k| (1..=5).contains(k))
                    .ok_or_else(|| {
                        fe.err(format!("has `{e}`: the number after `#` must be 1-5"))
                    })?;
                let weekday_range = pre
                    .split_once('-')
                    .is_some_and(|(a, b)| WEEKDAYS.contains(&a) && WEEKDAYS.contains(&b));
                if pre.is_empty() || pre.contains('/') || (pre.contains('-') && !weekday_range) {
                    return Err(fe.err(format!("has `{e}`: expected a weekday before `#`")));
                }
                nth = Some(Nth::N(k));
                e = pre.to_string();
            } else if let Some(rest) = e.strip_prefix('l')
                && !rest.is_empty()
                && rest.bytes().all(|b| b.is_ascii_digit())
            {
                nth = Some(Nth::Last);
                e = rest.to_string();
            }
        }
        // `*/n` means `min-max/n`; `a/n` means `a-max/n`.
        let mut t = e.clone();
        if let Some(step) = t.strip_prefix("*/") {
            t = format!("{}-{}/{}", spec.min, spec.max, step);
        }
        if parse_range(&t).is_none()
            && let Some((a, b)) = t.split_once('/')
        {
            t = format!("{a}-{}/{b}", spec.max);
        }
        let range = parse_range(&t);
        if let Some((low, high, step)) = range {
            let high = if index == DOM && high == "l" {
                "31"
            } else {
                high
            };
            let step: u32 = match step {
                None => 1,
                Some(s) => s.parse().ok().filter(|s| *s > 0).ok_or_else(|| {
                    fe.err(format!(
                        "has step `{s}` in `{e}`; a step must be a positive number"
                    ))
                })?,
            };
            let low = alias(index, &low_or_name(index, low, fe, &e)?);
            let high = alias(index, &low_or_name(index, high, fe, &e)?);
            if low.max(high) > spec.max {
                return Err(fe.err(format!("has `{e}`, which is out of range")));
            }
            let values: Vec<u32> = if low > high {
                // A reversed range wraps around (`FRI-MON`, `NOV-FEB`), croniter's way,
                // including how it carries the step over the wrap.
                let whole = spec.max - spec.min + 1;
                let mut rng: Vec<u32> = (low..=spec.max).step_by(step as usize).collect();
                let mut to_skip = 0;
                if let Some(&last) = rng.last() {
                    let already_skipped = spec.max - last;
                    let curpos = last - spec.min;
                    if curpos + step > whole && already_skipped < step {
                        to_skip = step - already_skipped;
                    }
                }
                rng.extend((spec.min + to_skip..=high).step_by(step as usize));
                rng
            } else if low == high {
                // croniter reads `MON-MON` as the whole cycle.
                (spec.min..=spec.max).step_by(step as usize).collect()
            } else {
                (low..=high).step_by(step as usize).collect()
            };
            // croniter re-reads every value of a range as a single value, so each must be
            // in range (`0-5` is not a valid day of the month).
            if values.iter().any(|v| *v < spec.min || *v > spec.max) {
                return Err(fe.err(format!("has `{e}`, which is out of range")));
            }
            match nth {
                Some(Nth::N(_)) => {
                    for v in values {
                        queue.push((v.to_string(), nth));
                    }
                }
                _ => {
                    for v in values {
                        out.insert(Item::Num(v));
                    }
                }
            }
            continue;
        }
        if t.starts_with('-') {
            return Err(fe.err(format!("has `{e}`; negative numbers are not allowed")));
        }
        let item = if t == "*" {
            STAR
        } else if index == DOM && t == "l" {
            Item::Last
        } else {
            let v = alias(index, &low_or_name(index, &t, fe, &e)?);
            if v < spec.min || v > spec.max {
                return Err(fe.err(format!("has `{e}`, which is out of range")));
            }
            Item::Num(v)
        };
        if item == STAR && nth.is_some() {
            return Err(fe.err(format!("has `{e}`; expected a weekday before `#`")));
        }
        if let (Some(n), Item::Num(v)) = (nth, item) {
            nth_out.push((v as u8, n));
        }
        out.insert(item);
    }
    // `*` together with other values is still everything.
    if out.contains(&STAR) {
        out = [STAR].into_iter().collect();
    }
    Ok((out, nth_out))
}

/// `a-b` or `a-b/n` (croniter's `step_search_re`).
fn parse_range(t: &str) -> Option<(&str, &str, Option<&str>)> {
    let (low, rest) = t.split_once('-')?;
    if low.is_empty() || rest.is_empty() {
        return None;
    }
    let (high, step) = match rest.split_once('/') {
        Some((h, s)) => (h, Some(s)),
        None => (rest, None),
    };
    if high.is_empty()
        || high.contains('-')
        || step.is_some_and(|s| s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()))
    {
        return None;
    }
    Some((low, high, step))
}

/// A number, or a month / weekday name in its own field.
fn low_or_name(index: usize, v: &str, fe: &FieldError<'_>, elem: &str) -> Result<u32, String> {
    if !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()) {
        return v
            .parse()
            .map_err(|_| fe.err(format!("has `{elem}`, which is out of range")));
    }
    let names: &[&str] = match index {
        3 => &MONTHS,
        DOW => &WEEKDAYS,
        _ => &[],
    };
    if let Some(pos) = names.iter().position(|n| *n == v) {
        return Ok(if index == 3 {
            pos as u32 + 1
        } else {
            pos as u32
        });
    }
    Err(fe.err(format!("has `{elem}`, which is not a valid value")))
}

/// croniter's `value_alias` for five fields: only `7` → `0` in day-of-week.
fn alias(index: usize, v: &u32) -> u32 {
    if index == DOW && *v == 7 { 0 } else { *v }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(s: &str) -> NaiveDateTime {
        NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f").expect(s)
    }

    fn utc(s: &str) -> DateTime<Utc> {
        naive(s.trim_end_matches('Z')).and_utc()
    }

    /// Rows where croniter 6 is wrong and we are not: see "Deviation" on [`CronExpr`].
    const KNOWN_CRONITER_BUGS: &[(&str, &str, &str)] =
        &[("naive_next", "0 0 */10 * 1-5", "2025-02-28T00:00:00")];

    /// Every row of `testdata/cron_golden.tsv` (computed by croniter 6 and pendulum 3 with
    /// Airflow's rules, see `gen_cron_golden.py`) must come out the same.
    #[test]
    fn matches_croniter_and_airflow_golden_file() {
        let golden = include_str!("../testdata/cron_golden.tsv");
        let mut checked = 0;
        let mut failures = Vec::new();
        for line in golden.lines() {
            let cols: Vec<&str> = line.split('\t').collect();
            let [kind, expr, tz, input, expected] = cols[..] else {
                panic!("bad golden line {line}")
            };
            if KNOWN_CRONITER_BUGS.contains(&(kind, expr, input)) {
                continue;
            }
            let cron = CronExpr::parse(expr).unwrap_or_else(|e| panic!("{expr}: {e}"));
            let got = match kind {
                "naive_next" => cron.naive_next(naive(input)).map(|t| t.to_string()),
                "naive_prev" => cron.naive_prev(naive(input)).map(|t| t.to_string()),
                "next" => cron
                    .next_after(utc(input), tz.parse().unwrap())
                    .map(|t| t.naive_utc().to_string()),
                "prev" => cron
                    .prev_before(utc(input), tz.parse().unwrap())
                    .map(|t| t.naive_utc().to_string()),
                other => panic!("unknown kind {other}"),
            };
            let want = naive(expected.trim_end_matches('Z')).to_string();
            if got.as_deref() != Some(want.as_str()) {
                failures.push(format!(
                    "{kind} `{expr}` {tz} from {input}: got {got:?}, want {want}"
                ));
            }
            checked += 1;
        }
        assert!(checked > 5000, "golden file too small: {checked}");
        assert!(
            failures.is_empty(),
            "{} of {checked} differ:\n{}",
            failures.len(),
            failures[..failures.len().min(40)].join("\n")
        );
    }

    #[test]
    fn croniter_late_february_skip_is_not_copied() {
        let cron = CronExpr::parse("0 0 1,31 * *").unwrap();
        let next = cron.naive_next(naive("2025-02-28T00:00:00")).unwrap();
        assert_eq!(next, naive("2025-03-01T00:00:00"));
        let cron = CronExpr::parse("0 0 */10 * 1-5").unwrap();
        let next = cron.naive_next(naive("2025-02-28T00:00:00")).unwrap();
        assert_eq!(next, naive("2025-03-01T00:00:00"));
    }

    #[test]
    fn dst_decisions_documented_on_cron_expr() {
        let ams: Tz = "Europe/Amsterdam".parse().unwrap();
        let daily = CronExpr::parse("30 2 * * *").unwrap();
        // Spring forward: 02:30 does not exist on 2024-03-31 -> 03:30 CEST.
        assert_eq!(
            daily.next_after(utc("2024-03-30T12:00:00Z"), ams),
            Some(utc("2024-03-31T01:30:00Z"))
        );
        // Fall back: 02:30 happens twice on 2024-10-27 -> the second one (CET), once.
        assert_eq!(
            daily.next_after(utc("2024-10-26T12:00:00Z"), ams),
            Some(utc("2024-10-27T01:30:00Z"))
        );
        assert_eq!(
            daily.next_after(utc("2024-10-27T01:30:00Z"), ams),
            Some(utc("2024-10-28T01:30:00Z"))
        );
        // Hourly on the fall-back day: the repeated 02:00 runs twice, an hour apart.
        let hourly = CronExpr::parse("0 * * * *").unwrap();
        let mut t = utc("2024-10-26T23:00:00Z");
        let mut fired = Vec::new();
        for _ in 0..4 {
            t = hourly.next_after(t, ams).unwrap();
            fired.push(t.with_timezone(&ams).format("%H:%M%:z").to_string());
        }
        assert_eq!(
            fired,
            ["02:00+02:00", "02:00+01:00", "03:00+01:00", "04:00+01:00"]
        );
        // Hourly on the spring-forward day: no 02:00.
        let mut t = utc("2024-03-30T23:00:00Z");
        let mut fired = Vec::new();
        for _ in 0..3 {
            t = hourly.next_after(t, ams).unwrap();
            fired.push(t.with_timezone(&ams).format("%H:%M%:z").to_string());
        }
        assert_eq!(fired, ["01:00+01:00", "03:00+02:00", "04:00+02:00"]);
    }

    #[test]
    fn prev_at_or_before_includes_the_instant_itself() {
        let cron = CronExpr::parse("0 0 * * *").unwrap();
        let tz = chrono_tz::UTC;
        assert_eq!(
            cron.prev_at_or_before(utc("2024-01-02T00:00:00Z"), tz),
            Some(utc("2024-01-02T00:00:00Z"))
        );
        assert_eq!(
            cron.prev_at_or_before(utc("2024-01-02T00:00:01Z"), tz),
            Some(utc("2024-01-02T00:00:00Z"))
        );
        assert_eq!(
            cron.prev_at_or_before(utc("2024-01-01T23:59:59Z"), tz),
            Some(utc("2024-01-01T00:00:00Z"))
        );
        assert_eq!(
            cron.next_at_or_after(utc("2024-01-02T00:00:00Z"), tz),
            Some(utc("2024-01-02T00:00:00Z"))
        );
    }

    #[test]
    fn presets_and_impossible_expressions() {
        assert_eq!(expand_preset("@DAILY"), Some("0 0 * * *"));
        assert_eq!(expand_preset("@annually"), Some("0 0 1 1 *"));
        assert_eq!(expand_preset("@once"), None);
        assert!(!CronExpr::parse("0 0 30 2 *").unwrap().ever_fires());
        assert!(CronExpr::parse("0 0 29 2 *").unwrap().ever_fires());
        let e = CronExpr::parse("0 0 15 * MON#2").unwrap_err();
        assert!(e.contains("never falls on"), "{e}");
        // croniter reads MON-MON as the whole week and 1-31 next to a plain weekday as a
        // restricted day-of-month (so the OR rule makes it every day).
        let c = CronExpr::parse("0 0 * * MON-MON").unwrap();
        assert_eq!(
            c.naive_next(naive("2024-01-02T00:00:00")),
            Some(naive("2024-01-03T00:00:00"))
        );
        let c = CronExpr::parse("0 0 1-31 * MON").unwrap();
        assert_eq!(
            c.naive_next(naive("2024-01-02T00:00:00")),
            Some(naive("2024-01-03T00:00:00"))
        );
    }
}
