//! Dates as templates see them: a pendulum-like `DateTime` object that renders like Python's
//! `str(pendulum.DateTime)`, plus Python's `strftime`/`strptime`/`isoformat` on top of chrono.

use chrono::format::{Item, Parsed, StrftimeItems};
use chrono::{
    DateTime, Datelike, Duration, Months, NaiveDate, NaiveDateTime, NaiveTime, TimeZone, Timelike,
    Utc,
};
use chrono_tz::Tz;
use minijinja::value::{DynObject, Kwargs, Object, ObjectRepr, Value, from_args};
use minijinja::{Error, ErrorKind, State};
use std::cmp::Ordering;
use std::fmt;
use std::sync::Arc;

/// A timezone-aware date-time, the counterpart of the `pendulum.DateTime` values Airflow puts in
/// the template context. Context dates are in UTC, like the ones the Task SDK gets from the API.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PyDateTime(pub DateTime<Tz>);

impl PyDateTime {
    pub fn utc(dt: DateTime<Utc>) -> Self {
        PyDateTime(dt.with_timezone(&Tz::UTC))
    }

    pub fn value(dt: DateTime<Utc>) -> Value {
        Value::from_object(PyDateTime::utc(dt))
    }

    pub fn opt_value(dt: Option<DateTime<Utc>>) -> Value {
        dt.map_or(Value::from(()), PyDateTime::value)
    }

    /// Python's `datetime.isoformat(sep)`: microseconds only when non-zero, `+HH:MM` offset.
    pub fn isoformat(&self, sep: char) -> String {
        let dt = &self.0;
        let mut s = format!(
            "{:04}-{:02}-{:02}{sep}{:02}:{:02}:{:02}",
            dt.year(),
            dt.month(),
            dt.day(),
            dt.hour(),
            dt.minute(),
            dt.second()
        );
        let micros = dt.nanosecond() / 1_000 % 1_000_000;
        if micros != 0 {
            s.push_str(&format!(".{micros:06}"));
        }
        s.push_str(&dt.format("%:z").to_string());
        s
    }

    pub fn ds(&self) -> String {
        self.0.format("%Y-%m-%d").to_string()
    }

    pub fn ds_nodash(&self) -> String {
        self.0.format("%Y%m%d").to_string()
    }

    pub fn ts(&self) -> String {
        self.isoformat('T')
    }

    pub fn ts_nodash(&self) -> String {
        self.0.format("%Y%m%dT%H%M%S").to_string()
    }

    pub fn ts_nodash_with_tz(&self) -> String {
        self.ts().replace(['-', ':'], "")
    }

    /// Pendulum's `add()`: calendar units (years, months, weeks, days) move the wall clock in the
    /// date's own timezone; hours, minutes and seconds move the absolute time.
    fn shifted(&self, sign: i64, kwargs: &Kwargs) -> Result<PyDateTime, Error> {
        let get = |name: &str| -> Result<i64, Error> {
            Ok(kwargs.get::<Option<i64>>(name)?.unwrap_or(0) * sign)
        };
        let (years, months, weeks, days) =
            (get("years")?, get("months")?, get("weeks")?, get("days")?);
        let (hours, minutes, seconds) = (get("hours")?, get("minutes")?, get("seconds")?);
        kwargs.assert_all_used()?;
        let overflow = || Error::new(ErrorKind::InvalidOperation, "date out of range");
        let tz = self.0.timezone();
        let mut local = self.0.naive_local();
        let total_months = years * 12 + months;
        if total_months != 0 {
            let m = Months::new(total_months.unsigned_abs() as u32);
            local = if total_months > 0 {
                local.checked_add_months(m)
            } else {
                local.checked_sub_months(m)
            }
            .ok_or_else(overflow)?;
        }
        local = local
            .checked_add_signed(Duration::days(weeks * 7 + days))
            .ok_or_else(overflow)?;
        let mut dt = tz
            .from_local_datetime(&local)
            .earliest()
            .or_else(|| {
                tz.from_local_datetime(&(local + Duration::hours(1)))
                    .earliest()
            })
            .ok_or_else(overflow)?;
        dt = dt
            .checked_add_signed(Duration::seconds(hours * 3600 + minutes * 60 + seconds))
            .ok_or_else(overflow)?;
        Ok(PyDateTime(dt))
    }
}

impl fmt::Display for PyDateTime {
    /// `str(pendulum.DateTime)` is `isoformat(" ")` in pendulum 3 (which Airflow 3 requires):
    /// `2024-01-01 00:00:00+00:00`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.isoformat(' '))
    }
}

impl Object for PyDateTime {
    fn repr(self: &Arc<Self>) -> ObjectRepr {
        ObjectRepr::Plain
    }

    fn get_value(self: &Arc<Self>, key: &Value) -> Option<Value> {
        let dt = &self.0;
        Some(match key.as_str()? {
            "year" => dt.year().into(),
            "month" => dt.month().into(),
            "day" => dt.day().into(),
            "hour" => dt.hour().into(),
            "minute" => dt.minute().into(),
            "second" => dt.second().into(),
            "microsecond" => (dt.nanosecond() / 1_000 % 1_000_000).into(),
            // pendulum: Monday = 0
            "day_of_week" => dt.weekday().num_days_from_monday().into(),
            "day_of_year" => dt.ordinal().into(),
            "days_in_month" => days_in_month(dt.year(), dt.month()).into(),
            "week_of_year" => dt.iso_week().week().into(),
            "quarter" => ((dt.month() - 1) / 3 + 1).into(),
            "int_timestamp" => dt.timestamp().into(),
            "float_timestamp" => (dt.timestamp_micros() as f64 / 1e6).into(),
            "timezone_name" | "tzname" => dt.timezone().name().into(),
            "offset" => dt
                .format("%z")
                .to_string()
                .parse::<i64>()
                .map_or(0, |hhmm| {
                    let sign = if hhmm < 0 { -1 } else { 1 };
                    sign * ((hhmm.abs() / 100) * 3600 + (hhmm.abs() % 100) * 60)
                })
                .into(),
            _ => return None,
        })
    }

    fn call_method(
        self: &Arc<Self>,
        _state: &State<'_, '_>,
        method: &str,
        args: &[Value],
    ) -> Result<Value, Error> {
        match method {
            "strftime" => {
                let (fmt,): (&str,) = from_args(args)?;
                Ok(strftime(&self.0, fmt)?.into())
            }
            "isoformat" => {
                let (sep,): (Option<&str>,) = from_args(args)?;
                let sep = sep.and_then(|s| s.chars().next()).unwrap_or('T');
                Ok(self.isoformat(sep).into())
            }
            "timestamp" => {
                let () = from_args(args)?;
                Ok((self.0.timestamp_micros() as f64 / 1e6).into())
            }
            "weekday" => {
                let () = from_args(args)?;
                Ok(self.0.weekday().num_days_from_monday().into())
            }
            "isoweekday" => {
                let () = from_args(args)?;
                Ok(self.0.weekday().number_from_monday().into())
            }
            "date" | "to_date_string" => {
                let () = from_args(args)?;
                Ok(self.ds().into())
            }
            "to_datetime_string" => {
                let () = from_args(args)?;
                Ok(self.0.format("%Y-%m-%d %H:%M:%S").to_string().into())
            }
            "to_iso8601_string" => {
                let () = from_args(args)?;
                let s = self.isoformat('T');
                Ok(if self.0.timezone() == Tz::UTC {
                    s.replace("+00:00", "Z")
                } else {
                    s
                }
                .into())
            }
            "in_timezone" | "in_tz" | "astimezone" => {
                let (name,): (&str,) = from_args(args)?;
                let tz: Tz = name.parse().map_err(|_| {
                    Error::new(
                        ErrorKind::InvalidOperation,
                        format!(
                            "unknown timezone `{name}`; use an IANA name like `Europe/Amsterdam`"
                        ),
                    )
                })?;
                Ok(Value::from_object(PyDateTime(self.0.with_timezone(&tz))))
            }
            "add" | "subtract" => {
                let (kwargs,): (Kwargs,) = from_args(args)?;
                let sign = if method == "add" { 1 } else { -1 };
                Ok(Value::from_object(self.shifted(sign, &kwargs)?))
            }
            _ => Err(Error::from(ErrorKind::UnknownMethod)),
        }
    }

    fn custom_cmp(self: &Arc<Self>, other: &DynObject) -> Option<Ordering> {
        let other = other.downcast_ref::<Self>()?;
        Some(self.0.cmp(&other.0))
    }

    fn render(self: &Arc<Self>, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&**self, f)
    }
}

fn days_in_month(year: i32, month: u32) -> u32 {
    let (ny, nm) = if month == 12 {
        (year + 1, 1)
    } else {
        (year, month + 1)
    };
    NaiveDate::from_ymd_opt(ny, nm, 1)
        .and_then(|d| d.pred_opt())
        .map_or(31, |d| d.day())
}

/// Translates a Python `strftime` format into chrono's dialect and rejects what chrono would
/// misread. The two agree on the common directives; `%f` is microseconds in Python.
fn chrono_format(fmt: &str) -> Result<String, Error> {
    let mut out = String::with_capacity(fmt.len() + 4);
    let mut chars = fmt.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        let Some(mut d) = chars.next() else {
            return Err(bad_format(fmt, "a lone `%` at the end"));
        };
        let mut flag = None;
        if d == '-' {
            flag = Some('-');
            d = chars
                .next()
                .ok_or_else(|| bad_format(fmt, "a lone `%-` at the end"))?;
        }
        match d {
            'f' => out.push_str("%6f"),
            'a' | 'A' | 'w' | 'd' | 'b' | 'B' | 'm' | 'y' | 'Y' | 'H' | 'I' | 'p' | 'M' | 'S'
            | 'z' | 'Z' | 'j' | 'U' | 'W' | 'c' | 'x' | 'X' | '%' | 'G' | 'u' | 'V' | 'e' | 'h'
            | 'D' | 'F' | 'T' | 'R' | 'C' | 'g' | 'k' | 'l' | 'n' | 't' | 's' => {
                out.push('%');
                if let Some(flag) = flag {
                    out.push(flag);
                }
                out.push(d);
            }
            other => {
                return Err(bad_format(
                    fmt,
                    &format!("unsupported directive `%{other}`"),
                ));
            }
        }
    }
    if StrftimeItems::new(&out).any(|i| matches!(i, Item::Error)) {
        return Err(bad_format(fmt, "an unsupported directive"));
    }
    Ok(out)
}

fn bad_format(fmt: &str, why: &str) -> Error {
    Error::new(
        ErrorKind::InvalidOperation,
        format!("date format `{fmt}` has {why}"),
    )
}

pub fn strftime<T: TimeZone>(dt: &DateTime<T>, fmt: &str) -> Result<String, Error>
where
    T::Offset: fmt::Display,
{
    let f = chrono_format(fmt)?;
    Ok(dt.format(&f).to_string())
}

pub fn strftime_naive(dt: &NaiveDateTime, fmt: &str) -> Result<String, Error> {
    let f = chrono_format(fmt)?;
    if f.contains("%z") || f.contains("%Z") {
        // Python renders these as empty for a naive datetime.
        let f = f.replace("%z", "").replace("%Z", "");
        return Ok(dt.format(&f).to_string());
    }
    Ok(dt.format(&f).to_string())
}

/// Python's `datetime.strptime`: fields the format does not mention default to 1900-01-01
/// 00:00:00, the whole input must be consumed.
pub fn strptime(s: &str, fmt: &str) -> Result<NaiveDateTime, Error> {
    let f = chrono_format(fmt)?;
    let mut p = Parsed::new();
    let bad = |e: chrono::format::ParseError| {
        Error::new(
            ErrorKind::InvalidOperation,
            format!("`{s}` does not match format `{fmt}`: {e}"),
        )
    };
    chrono::format::parse(&mut p, s, StrftimeItems::new(&f)).map_err(bad)?;
    // Each setter only fails when the field is already set, which is exactly when the default
    // must not apply, so the results are ignored on purpose.
    if p.year().is_none() && p.year_mod_100().is_none() && p.isoyear().is_none() {
        let _ = p.set_year(1900);
    }
    if p.month().is_none() && p.ordinal().is_none() && p.week_from_sun().is_none() {
        let _ = p.set_month(1);
    }
    if p.day().is_none() && p.ordinal().is_none() && p.week_from_sun().is_none() {
        let _ = p.set_day(1);
    }
    if p.hour_mod_12().is_none() {
        let _ = p.set_hour(0);
    } else if p.hour_div_12().is_none() {
        let _ = p.set_ampm(false);
    }
    if p.minute().is_none() {
        let _ = p.set_minute(0);
    }
    let date = p.to_naive_date().map_err(bad)?;
    let time = p.to_naive_time().map_err(bad)?;
    Ok(NaiveDateTime::new(date, time))
}

/// Reads a date given to a filter as a string (e.g. from `dag_run.conf`): RFC 3339, Python's
/// `str(datetime)` form, or a bare `YYYY-MM-DD` (midnight UTC).
pub fn parse_loose(s: &str) -> Option<PyDateTime> {
    let s = s.trim();
    if let Ok(dt) = DateTime::parse_from_rfc3339(s) {
        return Some(PyDateTime::utc(dt.with_timezone(&Utc)));
    }
    if let Ok(dt) = DateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S%.f%:z") {
        return Some(PyDateTime::utc(dt.with_timezone(&Utc)));
    }
    if let Ok(d) = NaiveDate::parse_from_str(s, "%Y-%m-%d") {
        return Some(PyDateTime::utc(
            NaiveDateTime::new(d, NaiveTime::MIN).and_utc(),
        ));
    }
    None
}

/// The date behind a filter argument: a context date or a date string.
pub fn date_arg(value: &Value, filter: &str) -> Result<PyDateTime, Error> {
    if value.is_undefined() {
        return Err(Error::from(ErrorKind::UndefinedError));
    }
    if let Some(d) = value.downcast_object_ref::<PyDateTime>() {
        return Ok(*d);
    }
    if let Some(d) = value.as_str().and_then(parse_loose) {
        return Ok(d);
    }
    Err(Error::new(
        ErrorKind::InvalidOperation,
        format!(
            "filter `{filter}` needs a date, got {}",
            crate::pyrepr::repr(value)
        ),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::NaiveDate;

    fn dt(y: i32, mo: u32, d: u32, h: u32, mi: u32, s: u32, us: u32) -> PyDateTime {
        PyDateTime::utc(
            NaiveDate::from_ymd_opt(y, mo, d)
                .unwrap()
                .and_hms_micro_opt(h, mi, s, us)
                .unwrap()
                .and_utc(),
        )
    }

    #[test]
    fn python_string_forms() {
        let d = dt(2024, 1, 2, 3, 4, 5, 0);
        assert_eq!(d.to_string(), "2024-01-02 03:04:05+00:00");
        assert_eq!(d.ts(), "2024-01-02T03:04:05+00:00");
        assert_eq!(d.ts_nodash_with_tz(), "20240102T030405+0000");
        let d = dt(2024, 1, 2, 3, 4, 5, 120);
        assert_eq!(d.to_string(), "2024-01-02 03:04:05.000120+00:00");
        assert_eq!(d.ts_nodash(), "20240102T030405");
    }

    #[test]
    fn strftime_follows_python() {
        let d = dt(2024, 3, 9, 14, 5, 0, 42);
        assert_eq!(
            strftime(&d.0, "%Y/%m/%d %H:%M:%S.%f").unwrap(),
            "2024/03/09 14:05:00.000042"
        );
        assert_eq!(
            strftime(&d.0, "%a %b %-d %I%p %Z %z %j %%").unwrap(),
            "Sat Mar 9 02PM UTC +0000 069 %"
        );
        assert!(
            strftime(&d.0, "%Q")
                .unwrap_err()
                .to_string()
                .contains("`%Q`")
        );
        assert!(strftime(&d.0, "50%").is_err());
    }

    #[test]
    fn strptime_defaults_missing_fields() {
        assert_eq!(
            strptime("1/5/2015", "%m/%d/%Y").unwrap().to_string(),
            "2015-01-05 00:00:00"
        );
        assert_eq!(
            strptime("05", "%m").unwrap().to_string(),
            "1900-05-01 00:00:00"
        );
        assert_eq!(
            strptime("03 PM", "%I %p").unwrap().to_string(),
            "1900-01-01 15:00:00"
        );
        assert!(strptime("2015-01-01x", "%Y-%m-%d").is_err());
        assert!(strptime("2015-13-01", "%Y-%m-%d").is_err());
    }

    #[test]
    fn add_and_subtract_like_pendulum() {
        let d = dt(2024, 1, 31, 12, 0, 0, 0);
        let kw = Kwargs::from_iter([("months", Value::from(1))]);
        assert_eq!(
            d.shifted(1, &kw).unwrap().to_string(),
            "2024-02-29 12:00:00+00:00"
        );
        let kw = Kwargs::from_iter([("days", Value::from(1)), ("hours", Value::from(2))]);
        assert_eq!(
            d.shifted(-1, &kw).unwrap().to_string(),
            "2024-01-30 10:00:00+00:00"
        );
        let kw = Kwargs::from_iter([("fortnights", Value::from(1))]);
        assert!(d.shifted(1, &kw).is_err());
    }
}
