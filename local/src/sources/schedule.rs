//! EventBridge schedules: `rate(..)` and `cron(..)` expressions and a [`Scheduler`] that invokes
//! functions when they fire.
//!
//! Expressions follow EventBridge (rules) syntax and semantics, all in UTC:
//!
//! * `rate(value unit)`: `value` a positive integer, `unit` one of `minute`/`minutes`,
//!   `hour`/`hours`, `day`/`days` — singular for 1, plural otherwise, as AWS insists.
//! * `cron(Minutes Hours Day-of-month Month Day-of-week Year)`:
//!
//!   | field        | values                 | wildcards           |
//!   |--------------|------------------------|---------------------|
//!   | Minutes      | 0-59                   | `, - * /`           |
//!   | Hours        | 0-23                   | `, - * /`           |
//!   | Day-of-month | 1-31                   | `, - * ? / L W`     |
//!   | Month        | 1-12 or JAN-DEC        | `, - * /`           |
//!   | Day-of-week  | 1-7 or SUN-SAT (1=SUN) | `, - * ? L #`       |
//!   | Year         | 1970-2199              | `, - * /`           |
//!
//!   Exactly one of Day-of-month and Day-of-week must be `?`. `L` (last day of the month; in
//!   Day-of-week alone, Saturday), `LW` (last weekday of the month), `15W` (the weekday nearest
//!   the 15th, within the month), `6L` (the last Friday of the month) and `2#1` (the first
//!   Monday of the month) are supported, each as a field on its own (not inside a list).
//!   Names are case-insensitive. Ranges must not wrap around (`FRI-MON` is rejected).

use std::collections::BTreeMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Datelike, NaiveDate, TimeZone, Timelike, Utc};
use serde_json::{json, Value};
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};

use crate::invoke::{InvokeError, Invoker};

/// The account id used in scheduled events and rule ARNs.
pub const ACCOUNT_ID: &str = "123456789012";
/// The region used in scheduled events and rule ARNs.
pub const REGION: &str = "us-east-1";

/// Why a schedule expression or a set of schedules was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScheduleError {
    #[error("invalid schedule expression {expression:?}: {reason}")]
    Invalid { expression: String, reason: String },
    #[error("two schedules are named {0:?}")]
    DuplicateName(String),
}

/// A parsed EventBridge schedule expression.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScheduleExpression {
    /// `rate(..)`: fires every period, counted from when the schedule starts. (Built directly,
    /// any non-zero period works, which tests use for sub-minute rates.)
    Rate(Duration),
    Cron(Box<CronExpression>),
}

impl ScheduleExpression {
    /// Parses `rate(..)` or `cron(..)`, validating like EventBridge.
    pub fn parse(expression: &str) -> Result<Self, ScheduleError> {
        let invalid = |reason: String| ScheduleError::Invalid {
            expression: expression.to_string(),
            reason,
        };
        let text = expression.trim();
        if let Some(inner) = text.strip_prefix("rate(").and_then(|r| r.strip_suffix(')')) {
            parse_rate(inner)
                .map(ScheduleExpression::Rate)
                .map_err(invalid)
        } else if let Some(inner) = text.strip_prefix("cron(").and_then(|r| r.strip_suffix(')')) {
            CronExpression::parse(inner)
                .map(|cron| ScheduleExpression::Cron(Box::new(cron)))
                .map_err(invalid)
        } else {
            Err(invalid(
                "expected rate(value unit) or cron(minutes hours day-of-month month day-of-week year)"
                    .to_string(),
            ))
        }
    }

    /// The first firing strictly after `t`. For a rate that is `t + period` (a rate schedule
    /// fires relative to its previous firing, or to its start); for a cron, the next matching
    /// minute. `None` when there is none (cron past the year 2199, or a zero rate).
    pub fn next_after(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        match self {
            ScheduleExpression::Rate(period) => {
                if period.is_zero() {
                    return None;
                }
                t.checked_add_signed(chrono::Duration::from_std(*period).ok()?)
            }
            ScheduleExpression::Cron(cron) => cron.next_after(t),
        }
    }
}

impl fmt::Display for ScheduleExpression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ScheduleExpression::Rate(period) => {
                let secs = period.as_secs();
                let (value, unit) = if secs > 0 && period.subsec_nanos() == 0 {
                    if secs % 86_400 == 0 {
                        (secs / 86_400, "day")
                    } else if secs % 3_600 == 0 {
                        (secs / 3_600, "hour")
                    } else if secs % 60 == 0 {
                        (secs / 60, "minute")
                    } else {
                        return write!(f, "rate({period:?})");
                    }
                } else {
                    return write!(f, "rate({period:?})");
                };
                let plural = if value == 1 { "" } else { "s" };
                write!(f, "rate({value} {unit}{plural})")
            }
            ScheduleExpression::Cron(cron) => write!(f, "cron({})", cron.source),
        }
    }
}

fn parse_rate(inner: &str) -> Result<Duration, String> {
    let parts: Vec<&str> = inner.split_whitespace().collect();
    let [value, unit] = parts.as_slice() else {
        return Err("rate needs a value and a unit, e.g. rate(5 minutes)".to_string());
    };
    if !value.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("rate value {value:?} is not a positive integer"));
    }
    let value: u64 = value
        .parse()
        .map_err(|_| format!("rate value {value:?} is too large"))?;
    if value == 0 {
        return Err("rate value must be greater than 0".to_string());
    }
    let (unit_seconds, singular) = match *unit {
        "minute" => (60, true),
        "minutes" => (60, false),
        "hour" => (3_600, true),
        "hours" => (3_600, false),
        "day" => (86_400, true),
        "days" => (86_400, false),
        other => {
            return Err(format!(
                "rate unit {other:?} is not one of minute(s), hour(s), day(s)"
            ))
        }
    };
    if value == 1 && !singular {
        return Err(format!(
            "a rate of 1 needs the singular unit ({})",
            unit.trim_end_matches('s')
        ));
    }
    if value != 1 && singular {
        return Err(format!("a rate of {value} needs the plural unit ({unit}s)"));
    }
    value
        .checked_mul(unit_seconds)
        .map(Duration::from_secs)
        .ok_or_else(|| "rate is too large".to_string())
}

/// A set of small integers `0..256` (field values minus the field's minimum).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
struct Bits([u64; 4]);

impl Bits {
    fn insert(&mut self, i: u32) {
        if let Some(word) = self.0.get_mut((i / 64) as usize) {
            *word |= 1u64 << (i % 64);
        }
    }
    fn contains(&self, i: u32) -> bool {
        self.0
            .get((i / 64) as usize)
            .is_some_and(|word| word & (1u64 << (i % 64)) != 0)
    }
}

/// The values one plain cron field (no `?`, `L`, `W`, `#`) matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FieldSet {
    min: u32,
    bits: Bits,
}

impl FieldSet {
    fn contains(&self, value: u32) -> bool {
        value >= self.min && self.bits.contains(value - self.min)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DayOfMonth {
    /// `?`
    Any,
    Set(FieldSet),
    /// `L`
    Last,
    /// `LW`
    LastWeekday,
    /// `nW`
    NearestWeekday(u32),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DayOfWeek {
    /// `?`
    Any,
    /// 1 = Sunday .. 7 = Saturday (`L` alone is Saturday).
    Set(FieldSet),
    /// `nL`: the last day `n` of the month.
    LastInMonth(u32),
    /// `d#n`: the `n`th day `d` of the month.
    Nth { day: u32, n: u32 },
}

/// A parsed `cron(..)` expression (see the module docs for the syntax).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CronExpression {
    source: String,
    minutes: FieldSet,
    hours: FieldSet,
    day_of_month: DayOfMonth,
    months: FieldSet,
    day_of_week: DayOfWeek,
    years: FieldSet,
}

const MONTH_NAMES: [&str; 12] = [
    "JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC",
];
const DAY_NAMES: [&str; 7] = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"];
const MIN_YEAR: u32 = 1970;
const MAX_YEAR: u32 = 2199;

/// How one field of a cron expression is written.
struct FieldKind {
    name: &'static str,
    min: u32,
    max: u32,
    names: &'static [&'static str],
    allow_step: bool,
}

const MINUTES: FieldKind = FieldKind {
    name: "minutes",
    min: 0,
    max: 59,
    names: &[],
    allow_step: true,
};
const HOURS: FieldKind = FieldKind {
    name: "hours",
    min: 0,
    max: 23,
    names: &[],
    allow_step: true,
};
const DAYS_OF_MONTH: FieldKind = FieldKind {
    name: "day-of-month",
    min: 1,
    max: 31,
    names: &[],
    allow_step: true,
};
const MONTHS: FieldKind = FieldKind {
    name: "month",
    min: 1,
    max: 12,
    names: &MONTH_NAMES,
    allow_step: true,
};
const DAYS_OF_WEEK: FieldKind = FieldKind {
    name: "day-of-week",
    min: 1,
    max: 7,
    names: &DAY_NAMES,
    allow_step: false,
};
const YEARS: FieldKind = FieldKind {
    name: "year",
    min: MIN_YEAR,
    max: MAX_YEAR,
    names: &[],
    allow_step: true,
};

impl FieldKind {
    fn value(&self, text: &str) -> Result<u32, String> {
        if let Some(index) = self.names.iter().position(|n| n.eq_ignore_ascii_case(text)) {
            return Ok(self.min + index as u32);
        }
        if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
            return Err(format!("{}: {text:?} is not a valid value", self.name));
        }
        let value: u32 = text
            .parse()
            .map_err(|_| format!("{}: {text:?} is out of range", self.name))?;
        if value < self.min || value > self.max {
            return Err(format!(
                "{}: {value} is outside {}-{}",
                self.name, self.min, self.max
            ));
        }
        Ok(value)
    }

    /// Parses `*`, `a`, `a-b`, `*/n`, `a/n`, `a-b/n` and comma-separated lists of them.
    fn parse_set(&self, text: &str) -> Result<FieldSet, String> {
        let mut bits = Bits::default();
        for part in text.split(',') {
            let (range, step) = match part.split_once('/') {
                Some((range, step)) => {
                    if !self.allow_step {
                        return Err(format!("{}: '/' is not allowed", self.name));
                    }
                    if step.is_empty() || !step.bytes().all(|b| b.is_ascii_digit()) {
                        return Err(format!("{}: step {step:?} is not a number", self.name));
                    }
                    let step: u32 = step
                        .parse()
                        .map_err(|_| format!("{}: step {step:?} is too large", self.name))?;
                    if step == 0 {
                        return Err(format!("{}: step must be at least 1", self.name));
                    }
                    (range, Some(step))
                }
                None => (part, None),
            };
            let (start, end) = if range == "*" {
                (self.min, self.max)
            } else if let Some((a, b)) = range.split_once('-') {
                let (a, b) = (self.value(a)?, self.value(b)?);
                if a > b {
                    return Err(format!(
                        "{}: range {range:?} runs backwards (wrap-around ranges are not supported)",
                        self.name
                    ));
                }
                (a, b)
            } else {
                let a = self.value(range)?;
                // `a/n` means from `a` to the end of the field, every `n`.
                (a, if step.is_some() { self.max } else { a })
            };
            let step = step.unwrap_or(1);
            let mut v = start;
            while v <= end {
                bits.insert(v - self.min);
                v += step;
            }
        }
        Ok(FieldSet {
            min: self.min,
            bits,
        })
    }
}

impl CronExpression {
    /// Parses the six fields inside `cron(..)`.
    pub fn parse(inner: &str) -> Result<Self, String> {
        let fields: Vec<&str> = inner.split_whitespace().collect();
        let [minutes, hours, dom, month, dow, year] = fields.as_slice() else {
            return Err(format!(
                "cron needs 6 fields (minutes hours day-of-month month day-of-week year), got {}",
                fields.len()
            ));
        };
        for (kind, text) in [
            (&MINUTES, minutes),
            (&HOURS, hours),
            (&MONTHS, month),
            (&YEARS, year),
        ] {
            if *text == "?" || (kind.names.is_empty() && text.contains(['L', 'W', '#', 'l', 'w'])) {
                return Err(format!(
                    "{}: only the day-of-month and day-of-week fields accept ?, L, W or #",
                    kind.name
                ));
            }
        }
        let day_of_month = parse_day_of_month(dom)?;
        let day_of_week = parse_day_of_week(dow)?;
        match (day_of_month, day_of_week) {
            (DayOfMonth::Any, DayOfWeek::Any) => {
                return Err("only one of day-of-month and day-of-week may be ?".to_string())
            }
            (DayOfMonth::Any, _) | (_, DayOfWeek::Any) => {}
            _ => {
                return Err(
                    "one of day-of-month and day-of-week must be ? (they cannot both be given)"
                        .to_string(),
                )
            }
        }
        Ok(CronExpression {
            source: fields.join(" "),
            minutes: MINUTES.parse_set(minutes)?,
            hours: HOURS.parse_set(hours)?,
            day_of_month,
            months: MONTHS.parse_set(month)?,
            day_of_week,
            years: YEARS.parse_set(year)?,
        })
    }

    /// The first matching minute strictly after `t` (seconds are zero), or `None` if there is
    /// none up to the end of 2199.
    pub fn next_after(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let minute_start = Utc
            .with_ymd_and_hms(t.year(), t.month(), t.day(), t.hour(), t.minute(), 0)
            .single()?;
        let mut c = minute_start + chrono::Duration::minutes(1);
        if c.year() < MIN_YEAR as i32 {
            c = Utc
                .with_ymd_and_hms(MIN_YEAR as i32, 1, 1, 0, 0, 0)
                .single()?;
        }
        loop {
            let year = u32::try_from(c.year()).ok()?;
            if year > MAX_YEAR {
                return None;
            }
            if !self.years.contains(year) {
                c = Utc.with_ymd_and_hms(c.year() + 1, 1, 1, 0, 0, 0).single()?;
                continue;
            }
            if !self.months.contains(c.month()) {
                let (y, m) = if c.month() == 12 {
                    (c.year() + 1, 1)
                } else {
                    (c.year(), c.month() + 1)
                };
                c = Utc.with_ymd_and_hms(y, m, 1, 0, 0, 0).single()?;
                continue;
            }
            if !self.day_matches(c.date_naive()) {
                let next = c.date_naive().succ_opt()?;
                c = Utc
                    .with_ymd_and_hms(next.year(), next.month(), next.day(), 0, 0, 0)
                    .single()?;
                continue;
            }
            if !self.hours.contains(c.hour()) {
                c = Utc
                    .with_ymd_and_hms(c.year(), c.month(), c.day(), c.hour(), 0, 0)
                    .single()?
                    + chrono::Duration::hours(1);
                continue;
            }
            if !self.minutes.contains(c.minute()) {
                c += chrono::Duration::minutes(1);
                continue;
            }
            return Some(c);
        }
    }

    fn day_matches(&self, date: NaiveDate) -> bool {
        let day = date.day();
        let last = days_in_month(date.year(), date.month());
        // 1 = Sunday .. 7 = Saturday
        let weekday = date.weekday().number_from_sunday();
        let dom_ok = match self.day_of_month {
            DayOfMonth::Any => true,
            DayOfMonth::Set(set) => set.contains(day),
            DayOfMonth::Last => day == last,
            DayOfMonth::LastWeekday => {
                let last_date = date.with_day(last).unwrap_or(date);
                let back = match last_date.weekday().number_from_sunday() {
                    1 => 2, // Sunday -> Friday
                    7 => 1, // Saturday -> Friday
                    _ => 0,
                };
                day == last - back
            }
            DayOfMonth::NearestWeekday(n) => {
                if n > last {
                    false
                } else {
                    let target = date.with_day(n).unwrap_or(date);
                    let wanted = match target.weekday().number_from_sunday() {
                        7 if n == 1 => n + 2,    // Saturday the 1st -> Monday the 3rd
                        7 => n - 1,              // Saturday -> Friday
                        1 if n == last => n - 2, // Sunday the last -> Friday
                        1 => n + 1,              // Sunday -> Monday
                        _ => n,
                    };
                    day == wanted
                }
            }
        };
        let dow_ok = match self.day_of_week {
            DayOfWeek::Any => true,
            DayOfWeek::Set(set) => set.contains(weekday),
            DayOfWeek::LastInMonth(d) => weekday == d && day + 7 > last,
            DayOfWeek::Nth { day: d, n } => weekday == d && (day - 1) / 7 + 1 == n,
        };
        dom_ok && dow_ok
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
        .map_or(28, |d| d.day())
}

fn parse_day_of_month(text: &str) -> Result<DayOfMonth, String> {
    let upper = text.to_ascii_uppercase();
    if upper == "?" {
        return Ok(DayOfMonth::Any);
    }
    if upper == "L" {
        return Ok(DayOfMonth::Last);
    }
    if upper == "LW" {
        return Ok(DayOfMonth::LastWeekday);
    }
    if let Some(n) = upper.strip_suffix('W') {
        if n.contains([',', '-', '/', '*']) {
            return Err("day-of-month: W takes a single day, e.g. 15W".to_string());
        }
        return Ok(DayOfMonth::NearestWeekday(DAYS_OF_MONTH.value(n)?));
    }
    if upper.contains(['L', 'W', '#', '?']) {
        return Err(format!(
            "day-of-month: {text:?} is not valid (L, LW, nW and ? must be the whole field; # belongs to day-of-week)"
        ));
    }
    DAYS_OF_MONTH.parse_set(text).map(DayOfMonth::Set)
}

fn parse_day_of_week(text: &str) -> Result<DayOfWeek, String> {
    let upper = text.to_ascii_uppercase();
    if upper == "?" {
        return Ok(DayOfWeek::Any);
    }
    if upper == "L" {
        // Quartz/EventBridge: L alone in day-of-week is the last day of the week, Saturday.
        return DAYS_OF_WEEK.parse_set("7").map(DayOfWeek::Set);
    }
    if upper.contains([',', '-', '*']) && upper.contains(['L', '#']) {
        return Err(format!(
            "day-of-week: {text:?} is not valid (nL and d#n must be the whole field)"
        ));
    }
    if let Some(d) = upper.strip_suffix('L') {
        return Ok(DayOfWeek::LastInMonth(DAYS_OF_WEEK.value(d)?));
    }
    if let Some((d, n)) = upper.split_once('#') {
        let day = DAYS_OF_WEEK.value(d)?;
        let n = match n {
            "1" | "2" | "3" | "4" | "5" => n.parse().unwrap_or(1),
            _ => return Err(format!("day-of-week: in {text:?} the week must be 1-5")),
        };
        return Ok(DayOfWeek::Nth { day, n });
    }
    DAYS_OF_WEEK.parse_set(text).map(DayOfWeek::Set)
}

/// One schedule (an EventBridge rule / SAM `Schedule` event) targeting a function.
#[derive(Debug, Clone, PartialEq)]
pub struct ScheduleSpec {
    /// The rule name; it appears in the scheduled event's `resources`.
    pub name: String,
    pub function: String,
    pub expression: ScheduleExpression,
    /// A constant `Input`: sent instead of the scheduled event when set.
    pub input: Option<Value>,
    /// Disabled schedules never fire on their own (they can still be triggered by name).
    pub enabled: bool,
}

/// The EventBridge scheduled event for rule `rule_name` firing at `time`.
pub fn scheduled_event(rule_name: &str, time: DateTime<Utc>) -> Value {
    json!({
        "version": "0",
        "id": uuid::Uuid::new_v4().to_string(),
        "detail-type": "Scheduled Event",
        "source": "aws.events",
        "account": ACCOUNT_ID,
        "time": time.format("%Y-%m-%dT%H:%M:%SZ").to_string(),
        "region": REGION,
        "resources": [format!("arn:aws:events:{REGION}:{ACCOUNT_ID}:rule/{rule_name}")],
        "detail": {},
    })
}

/// Counters of a [`Scheduler`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SchedulerStats {
    /// Firings, on schedule or triggered.
    pub fired: u64,
    /// Invocations that returned a result.
    pub succeeded: u64,
    /// Invocations that returned an error.
    pub failed: u64,
}

#[derive(Default)]
struct Counters {
    fired: AtomicU64,
    succeeded: AtomicU64,
    failed: AtomicU64,
}

struct Inner {
    specs: BTreeMap<String, ScheduleSpec>,
    invoker: Arc<dyn Invoker>,
    counters: Counters,
    /// Invocations started by the schedule loops (asynchronous, like EventBridge's).
    in_flight: Mutex<JoinSet<()>>,
}

impl Inner {
    fn event_for(spec: &ScheduleSpec, time: DateTime<Utc>) -> Value {
        spec.input
            .clone()
            .unwrap_or_else(|| scheduled_event(&spec.name, time))
    }

    fn record(&self, spec: &ScheduleSpec, result: &Result<Value, InvokeError>) {
        match result {
            Ok(_) => {
                self.counters.succeeded.fetch_add(1, Ordering::Relaxed);
                tracing::info!(schedule = %spec.name, function = %spec.function, "scheduled invocation succeeded");
            }
            Err(err) => {
                self.counters.failed.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(schedule = %spec.name, function = %spec.function, "scheduled invocation failed: {err}");
            }
        }
    }

    /// Starts an asynchronous invocation for a firing at `time`; does not wait for it.
    fn fire(self: &Arc<Self>, spec: &ScheduleSpec, time: DateTime<Utc>) {
        self.counters.fired.fetch_add(1, Ordering::Relaxed);
        tracing::info!(
            schedule = %spec.name,
            function = %spec.function,
            expression = %spec.expression,
            time = %time.format("%Y-%m-%dT%H:%M:%SZ"),
            "schedule fired"
        );
        let event = Self::event_for(spec, time);
        let inner = Arc::clone(self);
        let spec = spec.clone();
        let mut in_flight = self.in_flight.lock().unwrap_or_else(|e| e.into_inner());
        while in_flight.try_join_next().is_some() {}
        in_flight.spawn(async move {
            let result = inner.invoker.invoke(&spec.function, event).await;
            inner.record(&spec, &result);
        });
    }
}

/// Runs schedules: each enabled one fires on its own task and invokes its function
/// asynchronously (a slow function does not delay the next firing).
pub struct Scheduler {
    inner: Arc<Inner>,
    stop_tx: watch::Sender<bool>,
    loops: Vec<JoinHandle<()>>,
}

impl fmt::Debug for Scheduler {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Scheduler")
            .field("schedules", &self.inner.specs.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl Scheduler {
    /// Starts one task per enabled schedule (on the current Tokio runtime). Rate schedules first
    /// fire one period after the start; cron schedules at their next matching minute.
    pub fn start(
        specs: Vec<ScheduleSpec>,
        invoker: Arc<dyn Invoker>,
    ) -> Result<Scheduler, ScheduleError> {
        let mut by_name = BTreeMap::new();
        for spec in specs {
            if by_name.contains_key(&spec.name) {
                return Err(ScheduleError::DuplicateName(spec.name));
            }
            by_name.insert(spec.name.clone(), spec);
        }
        let inner = Arc::new(Inner {
            specs: by_name,
            invoker,
            counters: Counters::default(),
            in_flight: Mutex::new(JoinSet::new()),
        });
        let (stop_tx, stop_rx) = watch::channel(false);
        let loops = inner
            .specs
            .values()
            .filter(|spec| {
                if !spec.enabled {
                    tracing::info!(schedule = %spec.name, "schedule is disabled");
                }
                spec.enabled
            })
            .map(|spec| {
                tokio::spawn(run_schedule(
                    Arc::clone(&inner),
                    spec.name.clone(),
                    stop_rx.clone(),
                ))
            })
            .collect();
        Ok(Scheduler {
            inner,
            stop_tx,
            loops,
        })
    }

    /// The schedules, by name.
    pub fn schedules(&self) -> impl Iterator<Item = &ScheduleSpec> {
        self.inner.specs.values()
    }

    /// The counters so far.
    pub fn stats(&self) -> SchedulerStats {
        let c = &self.inner.counters;
        SchedulerStats {
            fired: c.fired.load(Ordering::Relaxed),
            succeeded: c.succeeded.load(Ordering::Relaxed),
            failed: c.failed.load(Ordering::Relaxed),
        }
    }

    /// Fires schedule `name` now (even if disabled) and returns the function's result. The event
    /// is the schedule's constant input, or the scheduled event with the current time.
    /// An unknown schedule name gives `InvokeError::UnknownFunction("schedule <name>")`.
    pub async fn trigger_now(&self, name: &str) -> Result<Value, InvokeError> {
        let Some(spec) = self.inner.specs.get(name) else {
            return Err(InvokeError::UnknownFunction(format!("schedule {name}")));
        };
        let now = Utc::now();
        self.inner.counters.fired.fetch_add(1, Ordering::Relaxed);
        tracing::info!(
            schedule = %spec.name,
            function = %spec.function,
            time = %now.format("%Y-%m-%dT%H:%M:%SZ"),
            "schedule triggered now"
        );
        let event = Inner::event_for(spec, now);
        let result = self.inner.invoker.invoke(&spec.function, event).await;
        self.inner.record(spec, &result);
        result
    }

    /// Stops the schedule loops, then waits for invocations already started to finish.
    pub async fn stop(mut self) {
        let _ = self.stop_tx.send(true);
        for task in std::mem::take(&mut self.loops) {
            if let Err(err) = task.await {
                tracing::error!("schedule task failed: {err}");
            }
        }
        let mut in_flight = {
            let mut guard = self
                .inner
                .in_flight
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            std::mem::take(&mut *guard)
        };
        while let Some(done) = in_flight.join_next().await {
            if let Err(err) = done {
                tracing::error!("scheduled invocation task failed: {err}");
            }
        }
    }
}

impl Drop for Scheduler {
    fn drop(&mut self) {
        let _ = self.stop_tx.send(true);
    }
}

async fn run_schedule(inner: Arc<Inner>, name: String, mut stop_rx: watch::Receiver<bool>) {
    let Some(spec) = inner.specs.get(&name) else {
        return;
    };
    let mut next = spec.expression.next_after(Utc::now());
    tracing::info!(
        schedule = %spec.name,
        function = %spec.function,
        expression = %spec.expression,
        next = ?next,
        "schedule started"
    );
    while let Some(at) = next {
        // Sleep until `at` by the wall clock (re-checked, so an early wake-up sleeps again).
        loop {
            if *stop_rx.borrow() {
                return;
            }
            let Ok(wait) = (at - Utc::now()).to_std() else {
                break; // `at` has passed
            };
            if wait.is_zero() {
                break;
            }
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                _ = stop_rx.changed() => return,
            }
        }
        inner.fire(spec, at);
        let now = Utc::now();
        next = match &spec.expression {
            // Keep the rate's phase; skip firings missed while the machine was asleep.
            ScheduleExpression::Rate(_) => {
                let mut n = spec.expression.next_after(at);
                while let Some(t) = n.filter(|t| *t <= now) {
                    n = spec.expression.next_after(t);
                }
                n
            }
            ScheduleExpression::Cron(_) => spec.expression.next_after(at.max(now)),
        };
    }
    tracing::info!(schedule = %spec.name, "schedule has no further firings");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(s: &str) -> anyhow::Result<DateTime<Utc>> {
        Ok(DateTime::parse_from_rfc3339(s)?.with_timezone(&Utc))
    }

    fn next(expr: &str, after: &str) -> anyhow::Result<Option<String>> {
        let e = ScheduleExpression::parse(expr)?;
        Ok(e.next_after(utc(after)?)
            .map(|t| t.format("%Y-%m-%dT%H:%M:%SZ").to_string()))
    }

    fn assert_next(expr: &str, after: &str, want: &str) -> anyhow::Result<()> {
        assert_eq!(
            next(expr, after)?.as_deref(),
            Some(want),
            "{expr} after {after}"
        );
        Ok(())
    }

    #[test]
    fn rates() -> anyhow::Result<()> {
        use ScheduleExpression::Rate;
        assert_eq!(
            ScheduleExpression::parse("rate(1 minute)")?,
            Rate(Duration::from_secs(60))
        );
        assert_eq!(
            ScheduleExpression::parse("rate(5 minutes)")?,
            Rate(Duration::from_secs(300))
        );
        assert_eq!(
            ScheduleExpression::parse("rate(1 hour)")?,
            Rate(Duration::from_secs(3600))
        );
        assert_eq!(
            ScheduleExpression::parse("rate(2 days)")?,
            Rate(Duration::from_secs(172_800))
        );
        assert_eq!(
            ScheduleExpression::parse("rate(2 days)")?.to_string(),
            "rate(2 days)"
        );
        assert_eq!(
            ScheduleExpression::parse("rate(1 hour)")?.to_string(),
            "rate(1 hour)"
        );
        assert_next(
            "rate(5 minutes)",
            "2024-01-01T00:00:30Z",
            "2024-01-01T00:05:30Z",
        )?;
        Ok(())
    }

    #[test]
    fn invalid_rates() {
        for bad in [
            "rate(1 minutes)",
            "rate(5 minute)",
            "rate(0 minutes)",
            "rate(-1 minutes)",
            "rate(1.5 hours)",
            "rate(5 seconds)",
            "rate(5)",
            "rate(minutes)",
            "rate(5 minutes",
            "rate 5 minutes",
            "rate(1 Minute)",
            "every 5 minutes",
        ] {
            assert!(
                ScheduleExpression::parse(bad).is_err(),
                "{bad} should be rejected"
            );
        }
    }

    #[test]
    fn invalid_crons() {
        for bad in [
            "cron(0 12 * * * *)",       // neither DOM nor DOW is ?
            "cron(0 12 ? * ? *)",       // both are ?
            "cron(0 12 * * ?)",         // five fields
            "cron(0 12 * * ? * *)",     // seven fields
            "cron(60 12 * * ? *)",      // minute out of range
            "cron(0 24 * * ? *)",       // hour out of range
            "cron(0 12 32 * ? *)",      // day out of range
            "cron(0 12 0 * ? *)",       // day out of range
            "cron(0 12 * 13 ? *)",      // month out of range
            "cron(0 12 ? * 8 *)",       // day-of-week out of range
            "cron(0 12 ? * 0 *)",       // day-of-week out of range (1-7)
            "cron(0 12 * * ? 1969)",    // year out of range
            "cron(0 12 * * ? 2200)",    // year out of range
            "cron(*/0 * * * ? *)",      // zero step
            "cron(0 12 ? * MON/2 *)",   // no step in day-of-week
            "cron(0 12 ? * FRI-MON *)", // wrap-around range
            "cron(30-10 * * * ? *)",    // backwards range
            "cron(0 12 ? FOO * *)",     // bad month name
            "cron(0 12 ? * FUNDAY *)",  // bad day name
            "cron(L 12 * * ? *)",       // L outside DOM/DOW
            "cron(? 12 * * ? *)",       // ? outside DOM/DOW
            "cron(0 12 ? * 2#6 *)",     // no sixth Monday
            "cron(0 12 1,L * ? *)",     // L inside a list
            "cron(0 12 ? * 1#1,2 *)",   // # inside a list
            "cron(0 12 1-5W * ? *)",    // W on a range
            "cron(0 12 3# * ? *)",      // # in DOM
            "cron(a b c d e f)",
            "cron()",
        ] {
            assert!(
                ScheduleExpression::parse(bad).is_err(),
                "{bad} should be rejected"
            );
        }
    }

    #[test]
    fn cron_basics_and_day_boundaries() -> anyhow::Result<()> {
        // Daily at 12:00: same day before noon, next day after.
        assert_next(
            "cron(0 12 * * ? *)",
            "2024-03-10T11:59:59Z",
            "2024-03-10T12:00:00Z",
        )?;
        assert_next(
            "cron(0 12 * * ? *)",
            "2024-03-10T12:00:00Z",
            "2024-03-11T12:00:00Z",
        )?;
        // Every 15 minutes, crossing midnight and a year end.
        assert_next(
            "cron(0/15 * * * ? *)",
            "2024-12-31T23:50:00Z",
            "2025-01-01T00:00:00Z",
        )?;
        assert_next(
            "cron(*/15 * * * ? *)",
            "2024-05-05T10:07:00Z",
            "2024-05-05T10:15:00Z",
        )?;
        // Every minute: strictly after, seconds dropped.
        assert_next(
            "cron(* * * * ? *)",
            "2024-05-05T10:07:30Z",
            "2024-05-05T10:08:00Z",
        )?;
        // Lists, ranges and hour steps.
        assert_next(
            "cron(5,35 8-10 * * ? *)",
            "2024-05-05T10:35:00Z",
            "2024-05-06T08:05:00Z",
        )?;
        assert_next(
            "cron(0 1/6 * * ? *)",
            "2024-05-05T08:00:00Z",
            "2024-05-05T13:00:00Z",
        )?;
        assert_next(
            "cron(10-20/5 * * * ? *)",
            "2024-05-05T08:16:00Z",
            "2024-05-05T08:20:00Z",
        )?;
        assert_next(
            "cron(10-20/5 * * * ? *)",
            "2024-05-05T08:20:00Z",
            "2024-05-05T09:10:00Z",
        )?;
        Ok(())
    }

    #[test]
    fn cron_month_ends() -> anyhow::Result<()> {
        // The 31st skips 30-day months and February.
        assert_next(
            "cron(0 0 31 * ? *)",
            "2024-01-31T00:00:00Z",
            "2024-03-31T00:00:00Z",
        )?;
        assert_next(
            "cron(0 0 31 * ? *)",
            "2024-03-31T00:00:00Z",
            "2024-05-31T00:00:00Z",
        )?;
        // 29 February: leap years only.
        assert_next(
            "cron(0 0 29 FEB ? *)",
            "2024-03-01T00:00:00Z",
            "2028-02-29T00:00:00Z",
        )?;
        // L: last day of the month.
        assert_next(
            "cron(0 18 L * ? *)",
            "2024-02-01T00:00:00Z",
            "2024-02-29T18:00:00Z",
        )?;
        assert_next(
            "cron(0 18 L * ? *)",
            "2023-02-01T00:00:00Z",
            "2023-02-28T18:00:00Z",
        )?;
        assert_next(
            "cron(0 18 L * ? *)",
            "2024-04-30T18:00:00Z",
            "2024-05-31T18:00:00Z",
        )?;
        // LW: last weekday (2024-08-31 is a Saturday -> Friday 30th; 2024-03-31 is a Sunday).
        assert_next(
            "cron(0 9 LW * ? *)",
            "2024-08-01T00:00:00Z",
            "2024-08-30T09:00:00Z",
        )?;
        assert_next(
            "cron(0 9 LW * ? *)",
            "2024-03-01T00:00:00Z",
            "2024-03-29T09:00:00Z",
        )?;
        // 15W: 2024-06-15 is a Saturday -> Friday 14th; 2024-09-15 is a Sunday -> Monday 16th.
        assert_next(
            "cron(0 9 15W * ? *)",
            "2024-06-01T00:00:00Z",
            "2024-06-14T09:00:00Z",
        )?;
        assert_next(
            "cron(0 9 15W * ? *)",
            "2024-09-01T00:00:00Z",
            "2024-09-16T09:00:00Z",
        )?;
        // 1W on Saturday the 1st (2024-06-01) -> Monday the 3rd, not the previous month.
        assert_next(
            "cron(0 9 1W * ? *)",
            "2024-05-31T00:00:00Z",
            "2024-06-03T09:00:00Z",
        )?;
        // Years: a single year, and nothing after it.
        assert_next(
            "cron(0 0 1 JAN ? 2030)",
            "2024-06-01T00:00:00Z",
            "2030-01-01T00:00:00Z",
        )?;
        assert_eq!(
            next("cron(0 0 1 JAN ? 2030)", "2030-01-01T00:00:00Z")?,
            None
        );
        // 30 February never exists.
        assert_eq!(next("cron(0 0 30 2 ? *)", "2024-01-01T00:00:00Z")?, None);
        Ok(())
    }

    #[test]
    fn cron_days_of_week() -> anyhow::Result<()> {
        // 2024-05-04 is a Saturday.
        assert_next(
            "cron(0 12 ? * MON-FRI *)",
            "2024-05-04T13:00:00Z",
            "2024-05-06T12:00:00Z",
        )?;
        assert_next(
            "cron(0 12 ? * 2-6 *)",
            "2024-05-04T13:00:00Z",
            "2024-05-06T12:00:00Z",
        )?;
        assert_next(
            "cron(0 12 ? * mon-fri *)",
            "2024-05-06T12:00:00Z",
            "2024-05-07T12:00:00Z",
        )?;
        // 1 = Sunday, 7 = Saturday.
        assert_next(
            "cron(0 8 ? * 1 *)",
            "2024-05-04T00:00:00Z",
            "2024-05-05T08:00:00Z",
        )?;
        assert_next(
            "cron(0 8 ? * SUN *)",
            "2024-05-04T00:00:00Z",
            "2024-05-05T08:00:00Z",
        )?;
        assert_next(
            "cron(0 8 ? * 7 *)",
            "2024-05-05T00:00:00Z",
            "2024-05-11T08:00:00Z",
        )?;
        assert_next(
            "cron(0 8 ? * L *)",
            "2024-05-05T00:00:00Z",
            "2024-05-11T08:00:00Z",
        )?;
        assert_next(
            "cron(0 8 ? * SAT,SUN *)",
            "2024-05-06T00:00:00Z",
            "2024-05-11T08:00:00Z",
        )?;
        // #: first Monday of the month; third Friday.
        assert_next(
            "cron(0 10 ? * MON#1 *)",
            "2024-05-07T00:00:00Z",
            "2024-06-03T10:00:00Z",
        )?;
        assert_next(
            "cron(0 10 ? * 6#3 *)",
            "2024-05-01T00:00:00Z",
            "2024-05-17T10:00:00Z",
        )?;
        // nL: last Friday of the month (2024-05-31 is a Friday; June's is the 28th).
        assert_next(
            "cron(0 10 ? * 6L *)",
            "2024-05-01T00:00:00Z",
            "2024-05-31T10:00:00Z",
        )?;
        assert_next(
            "cron(0 10 ? * FRIL *)",
            "2024-06-01T00:00:00Z",
            "2024-06-28T10:00:00Z",
        )?;
        // Month names and ranges with day names.
        assert_next(
            "cron(0 0 ? JUN-AUG MON *)",
            "2024-01-01T00:00:00Z",
            "2024-06-03T00:00:00Z",
        )?;
        Ok(())
    }
}
