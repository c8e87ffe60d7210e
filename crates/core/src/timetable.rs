//! Airflow 3 timetables as pure functions: when the next scheduled run is due, which runs a
//! backfill covers, and the data interval of a manual run.
//!
//! Which Airflow timetable a [`Schedule`] stands for:
//!
//! | schedule | Airflow timetable |
//! |---|---|
//! | `None` | `NullTimetable`: never scheduled |
//! | `Once` | `OnceTimetable` |
//! | `Continuous` | `ContinuousTimetable` (the scheduler drives it itself) |
//! | `Cron { data_interval: false }` | `CronTriggerTimetable(cron, interval=0)` (Airflow 3 default) |
//! | `Cron { data_interval: true }` | `CronDataIntervalTimetable` |
//! | `Interval { data_interval: false }` | `DeltaTriggerTimetable(delta, interval=0)` |
//! | `Interval { data_interval: true }` | `DeltaDataIntervalTimetable` |
//!
//! A trigger timetable's run at `t` has logical date `t`, data interval `[t, t]` and runs at
//! `t`. A data-interval timetable's run for `[start, end)` has logical date `start` and runs
//! at `end`. The restriction Airflow passes is `earliest = start_date`, `latest = end_date`,
//! and `catchup`.

use crate::cron::CronExpr;
use crate::model::{DagSpec, Schedule};
use chrono::{DateTime, Duration as ChronoDuration, Utc};
use chrono_tz::Tz;
use std::time::Duration;

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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunInfo {
    pub logical_date: DateTime<Utc>,
    pub data_interval_start: DateTime<Utc>,
    pub data_interval_end: DateTime<Utc>,
    pub run_after: DateTime<Utc>,
}

impl RunInfo {
    /// A zero-width run at `at` (`DagRunInfo.exact`).
    fn exact(at: DateTime<Utc>) -> RunInfo {
        RunInfo {
            logical_date: at,
            data_interval_start: at,
            data_interval_end: at,
            run_after: at,
        }
    }

    /// A run for `[start, end)` that runs at `end` (`DagRunInfo.interval`).
    fn interval(start: DateTime<Utc>, end: DateTime<Utc>) -> RunInfo {
        RunInfo {
            logical_date: start,
            data_interval_start: start,
            data_interval_end: end,
            run_after: end,
        }
    }
}

/// The four periodic timetables differ only in how they step through time.
enum Steps {
    Cron(CronExpr, Tz),
    Delta(ChronoDuration),
}

impl Steps {
    fn get_next(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        match self {
            Steps::Cron(c, tz) => c.next_after(t, *tz),
            Steps::Delta(d) => t.checked_add_signed(*d),
        }
    }
    fn get_prev(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        match self {
            Steps::Cron(c, tz) => c.prev_before(t, *tz),
            Steps::Delta(d) => t.checked_sub_signed(*d),
        }
    }
    fn align_to_next(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        match self {
            Steps::Cron(c, tz) => c.next_at_or_after(t, *tz),
            Steps::Delta(_) => Some(t),
        }
    }
    fn align_to_prev(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        match self {
            Steps::Cron(c, tz) => c.prev_at_or_before(t, *tz),
            Steps::Delta(_) => Some(t),
        }
    }
}

enum Timetable {
    Null,
    Once,
    Continuous,
    Trigger(Steps),
    DataInterval(Steps),
}

fn timetable(spec: &DagSpec) -> Timetable {
    // The DAG parser validated both; an invalid value here means a corrupted spec, and a
    // timetable that never fires is the safe reading of it.
    let tz = validate_timezone(&spec.timezone).unwrap_or(chrono_tz::UTC);
    match &spec.schedule {
        Schedule::None => Timetable::Null,
        Schedule::Once => Timetable::Once,
        Schedule::Continuous => Timetable::Continuous,
        Schedule::Cron {
            expr,
            data_interval,
        } => match CronExpr::parse(expr) {
            Ok(c) if *data_interval => Timetable::DataInterval(Steps::Cron(c, tz)),
            Ok(c) => Timetable::Trigger(Steps::Cron(c, tz)),
            Err(_) => Timetable::Null,
        },
        Schedule::Interval {
            every,
            data_interval,
        } => match delta(*every) {
            Some(d) if *data_interval => Timetable::DataInterval(Steps::Delta(d)),
            Some(d) => Timetable::Trigger(Steps::Delta(d)),
            None => Timetable::Null,
        },
    }
}

fn delta(every: Duration) -> Option<ChronoDuration> {
    ChronoDuration::from_std(every)
        .ok()
        .filter(|d| *d > ChronoDuration::zero())
}

/// Airflow's `TimeRestriction`.
struct Restriction {
    earliest: Option<DateTime<Utc>>,
    latest: Option<DateTime<Utc>>,
    catchup: bool,
}

/// `CronTriggerTimetable._calc_first_run` with the default `run_immediately=False`, which the
/// code treats like `None`: run the most recent past fire time if it is at most
/// max(10% of the gap between fire times, 5 minutes) ago, else wait for the next one.
fn calc_first_run(steps: &Steps, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
    match steps {
        Steps::Delta(_) => steps.align_to_prev(now),
        Steps::Cron(..) => {
            let past = steps.align_to_prev(now)?;
            let next = steps.align_to_next(now)?;
            let buffer = ((next - past) / 10).max(ChronoDuration::minutes(5));
            Some(if now - past <= buffer { past } else { next })
        }
    }
}

/// `_TriggerTimetable.next_dagrun_info`.
fn trigger_next(
    steps: &Steps,
    last: Option<&RunInfo>,
    r: &Restriction,
    now: DateTime<Utc>,
) -> Option<RunInfo> {
    let next = if r.catchup {
        match (last, r.earliest) {
            (Some(last), _) => steps.get_next(last.data_interval_end)?,
            (None, None) => calc_first_run(steps, now)?,
            (None, Some(earliest)) => steps.align_to_next(earliest)?,
        }
    } else {
        let mut candidates = vec![steps.align_to_prev(now)];
        match last {
            Some(last) => candidates.push(steps.get_next(last.data_interval_end)),
            None if r.earliest.is_none() => candidates.push(calc_first_run(steps, now)),
            None => {}
        }
        if let Some(earliest) = r.earliest {
            candidates.push(steps.align_to_next(earliest));
        }
        // Airflow would raise if a candidate could not be computed; with no fire time left
        // there is no next run.
        candidates
            .into_iter()
            .collect::<Option<Vec<_>>>()?
            .into_iter()
            .max()?
    };
    if r.latest.is_some_and(|latest| latest < next) {
        return None;
    }
    Some(RunInfo::exact(next))
}

/// `CronDataIntervalTimetable._skip_to_latest` / `DeltaDataIntervalTimetable._skip_to_latest`.
fn skip_to_latest(
    steps: &Steps,
    earliest: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> Option<DateTime<Utc>> {
    match steps {
        Steps::Cron(..) => {
            let last_start = steps.get_prev(now)?;
            let next_start = steps.get_next(last_start)?;
            // On a boundary, the interval that ends now; else the last complete one.
            let new_start = if next_start == now {
                last_start
            } else {
                steps.get_prev(last_start)?
            };
            match earliest {
                None => Some(new_start),
                Some(e) => Some(new_start.max(steps.align_to_next(e)?)),
            }
        }
        Steps::Delta(d) => {
            // Round now down to a multiple of the delta since the epoch, then one delta back.
            let step = d.num_nanoseconds().map(i128::from).unwrap_or(i128::MAX);
            let ts = now.timestamp_nanos_opt().map(i128::from)?;
            let rounded = ts - ts.rem_euclid(step);
            let rounded = DateTime::from_timestamp_nanos(i64::try_from(rounded).ok()?);
            let new_start = rounded.checked_sub_signed(*d)?;
            Some(earliest.map_or(new_start, |e| new_start.max(e)))
        }
    }
}

/// `_DataIntervalTimetable.next_dagrun_info`.
fn data_interval_next(
    steps: &Steps,
    last: Option<&RunInfo>,
    r: &Restriction,
    now: DateTime<Utc>,
) -> Option<RunInfo> {
    let earliest = if !r.catchup {
        Some(skip_to_latest(steps, r.earliest, now)?)
    } else {
        match r.earliest {
            Some(e) => Some(steps.align_to_next(e)?),
            None => None,
        }
    };
    let start = match last {
        None => earliest?,
        Some(last) => {
            // Aligning matters when the schedule changed since the last run.
            let aligned_end = steps.align_to_prev(last.data_interval_end)?;
            earliest.map_or(aligned_end, |e| aligned_end.max(e))
        }
    };
    if r.latest.is_some_and(|latest| start > latest) {
        return None;
    }
    let end = steps.get_next(start)?;
    Some(RunInfo::interval(start, end))
}

fn restriction(spec: &DagSpec) -> Restriction {
    Restriction {
        earliest: spec.start_date,
        latest: spec.end_date,
        catchup: spec.catchup,
    }
}

/// The next automated (scheduled) run after the last one the scheduler created (`last`: None
/// if none yet), given `now`. Honors start_date/end_date, catchup (false: skip missed
/// intervals and create only the latest one whose run_after <= now, like Airflow 3; true: the
/// one right after `last`), and returns runs whose run_after may be in the future (the caller
/// sets a timer for run_after). Schedule::None → None. Schedule::Once → one run at start_date
/// (or now if none) if last is None. Schedule::Continuous → None (the scheduler handles
/// continuous itself).
///
/// Details that follow Airflow: a cron trigger DAG without start_date and without runs starts
/// with the most recent fire time if it was at most max(10% of the period, 5 minutes) ago, else
/// with the next one; a run is created while its logical date (trigger: its run time;
/// data interval: its interval start) is at or before end_date.
pub fn next_run(spec: &DagSpec, last: Option<&RunInfo>, now: DateTime<Utc>) -> Option<RunInfo> {
    let r = restriction(spec);
    match timetable(spec) {
        Timetable::Null | Timetable::Continuous => None,
        Timetable::Once => {
            if last.is_some() {
                return None;
            }
            let at = r.earliest.unwrap_or(now);
            if r.latest.is_some_and(|latest| at > latest) {
                return None;
            }
            Some(RunInfo::exact(at))
        }
        Timetable::Trigger(steps) => trigger_next(&steps, last, &r, now),
        Timetable::DataInterval(steps) => data_interval_next(&steps, last, &r, now),
    }
}

/// Every run whose logical date is in [from, to] (inclusive), in order — for `dags backfill`.
///
/// This is Airflow's `iter_dagrun_infos_between`: the timetable stepped with catchup from
/// `from` to `to`, ignoring the DAG's start_date, end_date and catchup. `@once` yields one
/// run at `from`; `None` and `@continuous` yield nothing. (Airflow's backfill additionally
/// drops runs whose data interval has not ended yet; that needs `now` and is the caller's.)
pub fn runs_in_range(spec: &DagSpec, from: DateTime<Utc>, to: DateTime<Utc>) -> Vec<RunInfo> {
    let r = Restriction {
        earliest: Some(from),
        latest: Some(to),
        catchup: true,
    };
    let mut out = Vec::new();
    if from > to {
        return out;
    }
    let steps = match timetable(spec) {
        Timetable::Null | Timetable::Continuous => return out,
        Timetable::Once => {
            out.push(RunInfo::exact(from));
            return out;
        }
        Timetable::Trigger(s) => (s, false),
        Timetable::DataInterval(s) => (s, true),
    };
    let step = |last: Option<&RunInfo>| {
        if steps.1 {
            // `now` only matters without catchup.
            data_interval_next(&steps.0, last, &r, from)
        } else {
            trigger_next(&steps.0, last, &r, from)
        }
    };
    let mut info = step(None);
    while let Some(run) = info {
        if out
            .last()
            .is_some_and(|prev: &RunInfo| prev.logical_date >= run.logical_date)
        {
            break;
        }
        out.push(run);
        info = step(Some(&run));
    }
    out
}

/// Data interval of a manual trigger at `logical_date` (trigger timetables: zero-width at the
/// logical date; data-interval timetables: Airflow's infer_manual_data_interval). `run_after`
/// is the logical date; a caller that triggers "now" with an older logical date sets its own.
///
/// For a cron data-interval DAG the interval is the last complete one: daily at midnight,
/// a manual run at 01:00 on the 25th covers the 24th 00:00 to the 25th 00:00. For an interval
/// DAG it is the `every` before the logical date.
pub fn manual_run_info(spec: &DagSpec, logical_date: DateTime<Utc>) -> RunInfo {
    let (start, end) = match timetable(spec) {
        Timetable::DataInterval(steps) => {
            let end = steps.align_to_prev(logical_date);
            match end.and_then(|e| Some((steps.get_prev(e)?, e))) {
                Some(se) => se,
                None => (logical_date, logical_date),
            }
        }
        _ => (logical_date, logical_date),
    };
    RunInfo {
        logical_date,
        data_interval_start: start,
        data_interval_end: end,
        run_after: logical_date,
    }
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

    use crate::model::{DagSpec, Operator, TaskSpec};

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s)
            .unwrap_or_else(|e| panic!("{s}: {e}"))
            .with_timezone(&Utc)
    }

    fn dag(schedule: Schedule, tz: &str, start: Option<&str>, catchup: bool) -> DagSpec {
        DagSpec {
            dag_id: "d".into(),
            description: None,
            schedule,
            timezone: tz.into(),
            start_date: start.map(t),
            end_date: None,
            catchup,
            max_active_runs: 16,
            max_active_tasks: 16,
            dagrun_timeout: None,
            params: Default::default(),
            tags: vec![],
            owner: "airflow".into(),
            doc_md: None,
            is_paused_upon_creation: None,
            tasks: vec![TaskSpec::new("a", Operator::Empty)],
            fileloc: String::new(),
        }
    }

    fn cron(expr: &str, data_interval: bool) -> Schedule {
        Schedule::Cron {
            expr: expr.into(),
            data_interval,
        }
    }

    fn every(secs: u64, data_interval: bool) -> Schedule {
        Schedule::Interval {
            every: Duration::from_secs(secs),
            data_interval,
        }
    }

    /// Follows `next_run` `n` times from `last`, as the scheduler does right after creating
    /// each run, and returns the logical dates.
    fn chain(spec: &DagSpec, now: DateTime<Utc>, n: usize) -> Vec<RunInfo> {
        let mut out: Vec<RunInfo> = Vec::new();
        for _ in 0..n {
            match next_run(spec, out.last(), now) {
                Some(r) => out.push(r),
                None => break,
            }
        }
        out
    }

    fn logical(runs: &[RunInfo]) -> Vec<String> {
        runs.iter()
            .map(|r| r.logical_date.format("%Y-%m-%dT%H:%MZ").to_string())
            .collect()
    }

    #[test]
    fn cron_trigger_catchup_false_takes_latest_past_then_future() {
        let spec = dag(
            cron("0 0 * * *", false),
            "UTC",
            Some("2024-01-01T00:00:00Z"),
            false,
        );
        let now = t("2024-05-10T10:00:00Z");
        let first = next_run(&spec, None, now).unwrap();
        assert_eq!(first, RunInfo::exact(t("2024-05-10T00:00:00Z")));
        let second = next_run(&spec, Some(&first), now).unwrap();
        // In the future: the caller waits until run_after.
        assert_eq!(second, RunInfo::exact(t("2024-05-11T00:00:00Z")));
        // Missed intervals are skipped after a pause: the last run was days ago.
        let old = RunInfo::exact(t("2024-05-01T00:00:00Z"));
        assert_eq!(
            next_run(&spec, Some(&old), now).unwrap().logical_date,
            t("2024-05-10T00:00:00Z")
        );
    }

    #[test]
    fn cron_trigger_catchup_true_walks_every_interval() {
        let spec = dag(
            cron("@daily", false),
            "UTC",
            Some("2024-05-01T06:00:00Z"),
            true,
        );
        let now = t("2024-05-04T10:00:00Z");
        let runs = chain(&spec, now, 4);
        assert_eq!(
            logical(&runs),
            [
                "2024-05-02T00:00Z",
                "2024-05-03T00:00Z",
                "2024-05-04T00:00Z",
                "2024-05-05T00:00Z"
            ]
        );
        assert!(
            runs.iter()
                .all(|r| r.data_interval_start == r.data_interval_end
                    && r.run_after == r.logical_date)
        );
    }

    #[test]
    fn start_date_in_the_future_and_end_date() {
        let mut spec = dag(
            cron("0 12 * * *", false),
            "UTC",
            Some("2024-06-01T08:00:00Z"),
            false,
        );
        let now = t("2024-05-10T10:00:00Z");
        assert_eq!(
            next_run(&spec, None, now).unwrap().run_after,
            t("2024-06-01T12:00:00Z")
        );
        spec.catchup = true;
        assert_eq!(
            next_run(&spec, None, now).unwrap().run_after,
            t("2024-06-01T12:00:00Z")
        );
        spec.end_date = Some(t("2024-06-02T12:00:00Z"));
        let runs = chain(&spec, now, 5);
        assert_eq!(logical(&runs), ["2024-06-01T12:00Z", "2024-06-02T12:00Z"]);
        spec.end_date = Some(t("2024-05-31T00:00:00Z"));
        assert_eq!(next_run(&spec, None, now), None);
    }

    #[test]
    fn cron_trigger_without_start_date_uses_the_ten_percent_rule() {
        let spec = dag(cron("0 0 * * *", false), "UTC", None, false);
        // 10 hours after midnight is more than 2.4 h (10% of a day): wait for tomorrow.
        assert_eq!(
            next_run(&spec, None, t("2024-05-10T10:00:00Z"))
                .unwrap()
                .logical_date,
            t("2024-05-11T00:00:00Z")
        );
        // Two hours after midnight is within it: run today's.
        assert_eq!(
            next_run(&spec, None, t("2024-05-10T02:00:00Z"))
                .unwrap()
                .logical_date,
            t("2024-05-10T00:00:00Z")
        );
        // Hourly: the buffer is 6 minutes (10% of an hour).
        let spec = dag(cron("0 * * * *", false), "UTC", None, true);
        assert_eq!(
            next_run(&spec, None, t("2024-05-10T10:06:00Z"))
                .unwrap()
                .logical_date,
            t("2024-05-10T10:00:00Z")
        );
        assert_eq!(
            next_run(&spec, None, t("2024-05-10T10:07:00Z"))
                .unwrap()
                .logical_date,
            t("2024-05-10T11:00:00Z")
        );
        // Every 10 minutes: 10% is 1 minute, so the 5-minute minimum applies.
        let spec = dag(cron("*/10 * * * *", false), "UTC", None, true);
        assert_eq!(
            next_run(&spec, None, t("2024-05-10T10:25:00Z"))
                .unwrap()
                .logical_date,
            t("2024-05-10T10:20:00Z")
        );
        assert_eq!(
            next_run(&spec, None, t("2024-05-10T10:26:00Z"))
                .unwrap()
                .logical_date,
            t("2024-05-10T10:30:00Z")
        );
    }

    #[test]
    fn hourly_in_amsterdam_across_both_dst_switches() {
        let spec = dag(
            cron("0 * * * *", false),
            "Europe/Amsterdam",
            Some("2024-03-30T23:00:00Z"),
            true,
        );
        let runs = chain(&spec, t("2024-04-01T00:00:00Z"), 4);
        // 01:00 CET, then 03:00 CEST: the hour that does not exist is not run.
        assert_eq!(
            logical(&runs),
            [
                "2024-03-30T23:00Z",
                "2024-03-31T00:00Z",
                "2024-03-31T01:00Z",
                "2024-03-31T02:00Z"
            ]
        );
        let spec = dag(
            cron("0 * * * *", false),
            "Europe/Amsterdam",
            Some("2024-10-26T23:00:00Z"),
            true,
        );
        let runs = chain(&spec, t("2024-11-01T00:00:00Z"), 4);
        // 01:00 CEST, 02:00 CEST, 02:00 CET, 03:00 CET: the repeated hour runs twice.
        assert_eq!(
            logical(&runs),
            [
                "2024-10-26T23:00Z",
                "2024-10-27T00:00Z",
                "2024-10-27T01:00Z",
                "2024-10-27T02:00Z"
            ]
        );
    }

    #[test]
    fn daily_0230_in_amsterdam_across_both_dst_switches() {
        let spec = dag(
            cron("30 2 * * *", false),
            "Europe/Amsterdam",
            Some("2024-03-29T00:00:00Z"),
            true,
        );
        let runs = chain(&spec, t("2024-04-05T00:00:00Z"), 3);
        // 02:30 CET, then 03:30 CEST on the day 02:30 does not exist, then 02:30 CEST.
        assert_eq!(
            logical(&runs),
            [
                "2024-03-29T01:30Z",
                "2024-03-30T01:30Z",
                "2024-03-31T01:30Z"
            ]
        );
        assert_eq!(
            next_run(&spec, runs.last(), t("2024-04-05T00:00:00Z"))
                .unwrap()
                .logical_date,
            t("2024-04-01T00:30:00Z")
        );
        let spec = dag(
            cron("30 2 * * *", false),
            "Europe/Amsterdam",
            Some("2024-10-26T00:00:00Z"),
            true,
        );
        let runs = chain(&spec, t("2024-11-05T00:00:00Z"), 3);
        // 02:30 CEST, then once at the second 02:30 (CET), then 02:30 CET.
        assert_eq!(
            logical(&runs),
            [
                "2024-10-26T00:30Z",
                "2024-10-27T01:30Z",
                "2024-10-28T01:30Z"
            ]
        );
    }

    #[test]
    fn midnight_in_new_york_keeps_wall_clock() {
        let spec = dag(
            cron("0 0 * * *", false),
            "America/New_York",
            Some("2024-03-09T00:00:00Z"),
            true,
        );
        let runs = chain(&spec, t("2024-04-01T00:00:00Z"), 3);
        assert_eq!(
            logical(&runs),
            [
                "2024-03-09T05:00Z",
                "2024-03-10T05:00Z",
                "2024-03-11T04:00Z"
            ]
        );
        let spec = dag(
            cron("0 0 * * *", false),
            "America/New_York",
            Some("2024-11-02T00:00:00Z"),
            true,
        );
        let runs = chain(&spec, t("2024-12-01T00:00:00Z"), 3);
        assert_eq!(
            logical(&runs),
            [
                "2024-11-02T04:00Z",
                "2024-11-03T04:00Z",
                "2024-11-04T05:00Z"
            ]
        );
    }

    #[test]
    fn cron_data_interval_mode() {
        let spec = dag(
            cron("0 0 * * *", true),
            "UTC",
            Some("2024-05-01T00:00:00Z"),
            true,
        );
        let now = t("2024-05-10T10:00:00Z");
        let first = next_run(&spec, None, now).unwrap();
        assert_eq!(
            first,
            RunInfo {
                logical_date: t("2024-05-01T00:00:00Z"),
                data_interval_start: t("2024-05-01T00:00:00Z"),
                data_interval_end: t("2024-05-02T00:00:00Z"),
                run_after: t("2024-05-02T00:00:00Z"),
            }
        );
        assert_eq!(
            next_run(&spec, Some(&first), now).unwrap().logical_date,
            t("2024-05-02T00:00:00Z")
        );
        // catchup=false: the last complete interval, [9th, 10th), due now.
        let mut spec = spec;
        spec.catchup = false;
        let r = next_run(&spec, None, now).unwrap();
        assert_eq!(r.logical_date, t("2024-05-09T00:00:00Z"));
        assert_eq!(r.run_after, t("2024-05-10T00:00:00Z"));
        // Right on a boundary: the interval that ends now.
        let r = next_run(&spec, None, t("2024-05-10T00:00:00Z")).unwrap();
        assert_eq!(r.logical_date, t("2024-05-09T00:00:00Z"));
        // Then the next one, due in the future.
        let r2 = next_run(&spec, Some(&r), now).unwrap();
        assert_eq!(r2.logical_date, t("2024-05-10T00:00:00Z"));
        assert_eq!(r2.run_after, t("2024-05-11T00:00:00Z"));
        // A start_date that is not on the schedule is aligned to the next fire time.
        let spec = dag(
            cron("0 0 * * *", true),
            "UTC",
            Some("2024-05-01T13:00:00Z"),
            true,
        );
        assert_eq!(
            next_run(&spec, None, now).unwrap().logical_date,
            t("2024-05-02T00:00:00Z")
        );
        // end_date bounds the interval start, not its end.
        let mut spec = spec;
        spec.end_date = Some(t("2024-05-03T00:00:00Z"));
        assert_eq!(
            logical(&chain(&spec, now, 5)),
            ["2024-05-02T00:00Z", "2024-05-03T00:00Z"]
        );
    }

    #[test]
    fn cron_data_interval_in_amsterdam_spans_the_short_day() {
        let spec = dag(
            cron("0 0 * * *", true),
            "Europe/Amsterdam",
            Some("2024-03-30T23:00:00Z"),
            true,
        );
        let r = next_run(&spec, None, t("2024-04-05T00:00:00Z")).unwrap();
        assert_eq!(r.data_interval_start, t("2024-03-30T23:00:00Z"));
        // Local midnight to local midnight is 23 hours that day.
        assert_eq!(r.data_interval_end, t("2024-03-31T22:00:00Z"));
    }

    #[test]
    fn fixed_interval_trigger() {
        let spec = dag(
            every(6 * 3600, false),
            "UTC",
            Some("2024-05-01T01:00:00Z"),
            true,
        );
        let runs = chain(&spec, t("2024-05-10T00:00:00Z"), 3);
        assert_eq!(
            logical(&runs),
            [
                "2024-05-01T01:00Z",
                "2024-05-01T07:00Z",
                "2024-05-01T13:00Z"
            ]
        );
        // Without catchup a trigger interval runs now, then every 6 hours after the last run.
        let mut spec = spec;
        spec.catchup = false;
        let now = t("2024-05-10T10:17:00Z");
        let first = next_run(&spec, None, now).unwrap();
        assert_eq!(first, RunInfo::exact(now));
        assert_eq!(
            next_run(&spec, Some(&first), now).unwrap().logical_date,
            t("2024-05-10T16:17:00Z")
        );
        let old = RunInfo::exact(t("2024-05-09T00:00:00Z"));
        assert_eq!(next_run(&spec, Some(&old), now).unwrap().logical_date, now);
    }

    #[test]
    fn fixed_interval_with_data_interval() {
        let spec = dag(
            every(6 * 3600, true),
            "UTC",
            Some("2024-05-01T01:00:00Z"),
            true,
        );
        let now = t("2024-05-10T10:17:00Z");
        let first = next_run(&spec, None, now).unwrap();
        assert_eq!(first.logical_date, t("2024-05-01T01:00:00Z"));
        assert_eq!(first.run_after, t("2024-05-01T07:00:00Z"));
        assert_eq!(
            next_run(&spec, Some(&first), now).unwrap().logical_date,
            t("2024-05-01T07:00:00Z")
        );
        // catchup=false: now rounded down to a multiple of 6 h since the epoch (06:00), one
        // interval back.
        let mut spec = spec;
        spec.catchup = false;
        let r = next_run(&spec, None, now).unwrap();
        assert_eq!(r.logical_date, t("2024-05-10T00:00:00Z"));
        assert_eq!(r.run_after, t("2024-05-10T06:00:00Z"));
    }

    #[test]
    fn once_none_and_continuous() {
        let now = t("2024-05-10T10:00:00Z");
        let spec = dag(Schedule::Once, "UTC", Some("2024-05-01T00:00:00Z"), false);
        let r = next_run(&spec, None, now).unwrap();
        assert_eq!(r, RunInfo::exact(t("2024-05-01T00:00:00Z")));
        assert_eq!(next_run(&spec, Some(&r), now), None);
        let spec = dag(Schedule::Once, "UTC", None, false);
        assert_eq!(next_run(&spec, None, now), Some(RunInfo::exact(now)));
        let mut spec = dag(Schedule::Once, "UTC", Some("2024-05-01T00:00:00Z"), false);
        spec.end_date = Some(t("2024-04-01T00:00:00Z"));
        assert_eq!(next_run(&spec, None, now), None);
        for s in [Schedule::None, Schedule::Continuous] {
            let spec = dag(s, "UTC", Some("2024-05-01T00:00:00Z"), true);
            assert_eq!(next_run(&spec, None, now), None);
            assert!(runs_in_range(&spec, t("2024-05-01T00:00:00Z"), now).is_empty());
        }
    }

    #[test]
    fn backfill_ranges() {
        let spec = dag(
            cron("0 0 * * *", false),
            "UTC",
            Some("2024-01-01T00:00:00Z"),
            false,
        );
        let runs = runs_in_range(&spec, t("2024-05-01T00:00:00Z"), t("2024-05-03T00:00:00Z"));
        assert_eq!(
            logical(&runs),
            [
                "2024-05-01T00:00Z",
                "2024-05-02T00:00Z",
                "2024-05-03T00:00Z"
            ]
        );
        let runs = runs_in_range(&spec, t("2024-05-01T12:00:00Z"), t("2024-05-03T23:59:00Z"));
        assert_eq!(logical(&runs), ["2024-05-02T00:00Z", "2024-05-03T00:00Z"]);
        assert!(
            runs_in_range(&spec, t("2024-05-03T00:00:00Z"), t("2024-05-01T00:00:00Z")).is_empty()
        );
        let spec = dag(cron("0 0 * * *", true), "UTC", None, false);
        let runs = runs_in_range(&spec, t("2024-05-01T00:00:00Z"), t("2024-05-03T00:00:00Z"));
        assert_eq!(
            logical(&runs),
            [
                "2024-05-01T00:00Z",
                "2024-05-02T00:00Z",
                "2024-05-03T00:00Z"
            ]
        );
        assert_eq!(runs[2].run_after, t("2024-05-04T00:00:00Z"));
        let spec = dag(every(12 * 3600, false), "UTC", None, false);
        let runs = runs_in_range(&spec, t("2024-05-01T03:00:00Z"), t("2024-05-02T03:00:00Z"));
        assert_eq!(
            logical(&runs),
            [
                "2024-05-01T03:00Z",
                "2024-05-01T15:00Z",
                "2024-05-02T03:00Z"
            ]
        );
        let spec = dag(Schedule::Once, "UTC", None, false);
        assert_eq!(
            runs_in_range(&spec, t("2024-05-01T03:00:00Z"), t("2024-05-02T03:00:00Z")),
            [RunInfo::exact(t("2024-05-01T03:00:00Z"))]
        );
    }

    #[test]
    fn manual_run_data_intervals() {
        let ld = t("2024-05-25T01:00:00Z");
        let spec = dag(cron("0 0 * * *", false), "UTC", None, false);
        assert_eq!(manual_run_info(&spec, ld), RunInfo::exact(ld));
        let spec = dag(Schedule::None, "UTC", None, false);
        assert_eq!(manual_run_info(&spec, ld), RunInfo::exact(ld));
        let spec = dag(cron("0 0 * * *", true), "UTC", None, false);
        let r = manual_run_info(&spec, ld);
        assert_eq!(r.logical_date, ld);
        assert_eq!(r.run_after, ld);
        assert_eq!(r.data_interval_start, t("2024-05-24T00:00:00Z"));
        assert_eq!(r.data_interval_end, t("2024-05-25T00:00:00Z"));
        // On a boundary the interval ends at the logical date.
        let r = manual_run_info(&spec, t("2024-05-25T00:00:00Z"));
        assert_eq!(r.data_interval_start, t("2024-05-24T00:00:00Z"));
        let spec = dag(every(3600, true), "UTC", None, false);
        let r = manual_run_info(&spec, ld);
        assert_eq!(r.data_interval_start, t("2024-05-25T00:00:00Z"));
        assert_eq!(r.data_interval_end, ld);
    }
}
