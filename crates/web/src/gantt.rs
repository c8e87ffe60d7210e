//! The geometry of a run's Gantt chart: one row per task instance, one bar per try from its
//! start to its end (or now, while it runs), the time it waited in the queue before it, and a
//! time axis with evenly spaced, round labels.

use chrono::{DateTime, TimeZone, Utc};

/// One try of a task instance, as far as its times are known.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Try {
    pub queued: Option<DateTime<Utc>>,
    pub start: Option<DateTime<Utc>>,
    pub end: Option<DateTime<Utc>>,
}

/// Where a try is drawn, in units from the chart's left edge (the time axis' origin).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Bar {
    pub x: f64,
    pub width: f64,
    /// The queued stretch just before the bar, when the queue time is known and earlier.
    pub queued: Option<(f64, f64)>,
    /// The try has not ended: the bar reaches "now".
    pub open: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Tick {
    pub x: f64,
    pub label: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Chart {
    /// Parallel to the input: a bar per try that has started.
    pub bars: Vec<Vec<Option<Bar>>>,
    pub ticks: Vec<Tick>,
    pub start: Option<DateTime<Utc>>,
    pub end: Option<DateTime<Utc>>,
}

/// The narrowest bar drawn, so instant tries stay visible.
const MIN_BAR: f64 = 2.0;
/// Round tick steps, in seconds.
const STEPS: &[i64] = &[
    1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10_800, 21_600, 43_200, 86_400,
    172_800, 604_800,
];

/// Lays `rows` of tries on an axis `width` units wide spanning the earliest queue or start
/// time to the latest end (or `now` for tries still running).
pub fn chart(rows: &[Vec<Try>], now: DateTime<Utc>, width: f64, max_ticks: usize) -> Chart {
    let mut lo: Option<DateTime<Utc>> = None;
    let mut hi: Option<DateTime<Utc>> = None;
    for t in rows.iter().flatten() {
        let Some(start) = t.start else { continue };
        let first = t.queued.filter(|q| *q < start).unwrap_or(start);
        let last = t.end.unwrap_or(now).max(start);
        lo = Some(lo.map_or(first, |l| l.min(first)));
        hi = Some(hi.map_or(last, |h| h.max(last)));
    }
    let (Some(lo), Some(hi)) = (lo, hi) else {
        return Chart {
            bars: rows.iter().map(|r| vec![None; r.len()]).collect(),
            ticks: Vec::new(),
            start: None,
            end: None,
        };
    };
    let span = ((hi - lo).num_milliseconds() as f64 / 1000.0).max(1.0);
    let x = |t: DateTime<Utc>| ((t - lo).num_milliseconds() as f64 / 1000.0) / span * width;
    let bars = rows
        .iter()
        .map(|row| {
            row.iter()
                .map(|t| {
                    let start = t.start?;
                    let end = t.end.unwrap_or(now).max(start);
                    let bx = x(start);
                    let bw = (x(end) - bx).max(MIN_BAR);
                    let queued = t.queued.filter(|q| *q < start).map(|q| (x(q), bx - x(q)));
                    Some(Bar {
                        x: bx,
                        width: bw.min(width - bx).max(MIN_BAR.min(width)),
                        queued,
                        open: t.end.is_none(),
                    })
                })
                .collect()
        })
        .collect();
    Chart {
        bars,
        ticks: ticks(lo, hi, width, max_ticks),
        start: Some(lo),
        end: Some(hi),
    }
}

/// Labels at multiples of a round step, at most `max_ticks` of them, inside `[lo, hi]`.
pub fn ticks(lo: DateTime<Utc>, hi: DateTime<Utc>, width: f64, max_ticks: usize) -> Vec<Tick> {
    let span_ms = (hi - lo).num_milliseconds().max(1000);
    let max_ticks = max_ticks.max(1) as i64;
    let step = STEPS
        .iter()
        .copied()
        .find(|s| span_ms / (s * 1000) < max_ticks)
        .unwrap_or_else(|| {
            let days = (span_ms / 86_400_000) / max_ticks + 1;
            days * 86_400
        });
    let multi_day = lo.date_naive() != hi.date_naive();
    let format = if multi_day {
        "%m-%d %H:%M"
    } else if step < 60 {
        "%H:%M:%S"
    } else {
        "%H:%M"
    };
    let first = lo.timestamp().div_euclid(step) * step
        + if lo.timestamp().rem_euclid(step) == 0 && lo.timestamp_subsec_millis() == 0 {
            0
        } else {
            step
        };
    let mut out = Vec::new();
    let mut t = first;
    while t * 1000 <= hi.timestamp_millis() {
        if let Some(at) = Utc.timestamp_opt(t, 0).single() {
            let x = (at - lo).num_milliseconds() as f64 / span_ms as f64 * width;
            out.push(Tick {
                x,
                label: at.format(format).to_string(),
            });
        }
        t += step;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(h: u32, m: u32, s: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 3, 1, h, m, s).unwrap()
    }

    #[test]
    fn bars_span_start_to_end_with_the_queue_before() {
        let rows = vec![
            vec![Try {
                queued: Some(at(10, 0, 0)),
                start: Some(at(10, 0, 10)),
                end: Some(at(10, 0, 40)),
            }],
            vec![Try {
                queued: None,
                start: Some(at(10, 0, 40)),
                end: Some(at(10, 1, 40)),
            }],
            vec![Try {
                queued: Some(at(10, 1, 0)),
                start: None,
                end: None,
            }],
        ];
        let c = chart(&rows, at(12, 0, 0), 1000.0, 8);
        assert_eq!(c.start, Some(at(10, 0, 0)));
        assert_eq!(c.end, Some(at(10, 1, 40)));
        let a = c.bars[0][0].unwrap();
        assert_eq!(a.x, 100.0);
        assert_eq!(a.width, 300.0);
        assert_eq!(a.queued, Some((0.0, 100.0)));
        assert!(!a.open);
        let b = c.bars[1][0].unwrap();
        assert_eq!((b.x, b.width, b.queued), (400.0, 600.0, None));
        assert_eq!(c.bars[2][0], None, "a try that never started has no bar");
        // 100 s: ticks every 15 s from 10:00:00.
        let labels: Vec<&str> = c.ticks.iter().map(|t| t.label.as_str()).collect();
        assert_eq!(
            labels,
            [
                "10:00:00", "10:00:15", "10:00:30", "10:00:45", "10:01:00", "10:01:15", "10:01:30"
            ]
        );
        assert_eq!(c.ticks[1].x, 150.0);
    }

    #[test]
    fn a_running_try_reaches_now_and_tries_share_a_row() {
        let rows = vec![vec![
            Try {
                queued: None,
                start: Some(at(9, 0, 0)),
                end: Some(at(9, 30, 0)),
            },
            Try {
                queued: None,
                start: Some(at(9, 40, 0)),
                end: None,
            },
        ]];
        let c = chart(&rows, at(10, 0, 0), 600.0, 8);
        let second = c.bars[0][1].unwrap();
        assert!(second.open);
        assert_eq!(second.x, 400.0);
        assert_eq!(second.x + second.width, 600.0);
        assert!(c.ticks.iter().all(|t| t.label.len() == 5), "{:?}", c.ticks);
        assert!(c.ticks.len() <= 8);
    }

    #[test]
    fn instant_tries_stay_visible_and_empty_runs_have_no_axis() {
        let rows = vec![vec![Try {
            queued: None,
            start: Some(at(9, 0, 0)),
            end: Some(at(9, 0, 0)),
        }]];
        let c = chart(&rows, at(9, 0, 0), 500.0, 8);
        assert!(c.bars[0][0].unwrap().width >= MIN_BAR);
        let empty = chart(&[vec![], vec![]], at(9, 0, 0), 500.0, 8);
        assert!(empty.ticks.is_empty() && empty.start.is_none());
        assert_eq!(empty.bars.len(), 2);
    }

    #[test]
    fn runs_over_days_label_the_date() {
        let lo = Utc.with_ymd_and_hms(2026, 3, 1, 22, 0, 0).unwrap();
        let hi = Utc.with_ymd_and_hms(2026, 3, 3, 2, 0, 0).unwrap();
        let t = ticks(lo, hi, 800.0, 8);
        assert!(!t.is_empty() && t.len() <= 8);
        assert!(t[0].label.starts_with("03-0"), "{t:?}");
        assert!(t.windows(2).all(|w| w[0].x < w[1].x));
    }
}
