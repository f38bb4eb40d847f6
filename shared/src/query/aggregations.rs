//! `GET /v1/aggregations` and `GET /v1/aggregations/top`: reads of the hourly aggregates the
//! rollup stores, one analytics-table partition per UTC day, read concurrently.

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, NaiveDate, NaiveTime, Utc};
use futures::{StreamExt, TryStreamExt};
use rust_decimal::Decimal;
use serde_json::{json, Map, Value};

use super::params::QueryParams;
use crate::aggregation::AggregateReader;
use crate::error::ApiError;
use crate::event::{check_currency, format_utc, FunnelStage};
use crate::http::{HttpRequest, HttpResponse};
use crate::rollup::{Dimension, Filter, Metric, Totals, WindowAggregates};

/// Days read at once: a 31-day query is four rounds of requests.
const READ_CONCURRENCY: usize = 8;
const MAX_HOUR_RANGE_DAYS: i64 = 31;
const MAX_DAY_RANGE_DAYS: i64 = 400;
const MAX_VALUE_LEN: usize = 128;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Window {
    Hour,
    Day,
}

impl Window {
    fn as_str(self) -> &'static str {
        match self {
            Self::Hour => "hour",
            Self::Day => "day",
        }
    }

    fn length(self) -> Duration {
        match self {
            Self::Hour => Duration::hours(1),
            Self::Day => Duration::days(1),
        }
    }

    fn max_range_days(self) -> i64 {
        match self {
            Self::Hour => MAX_HOUR_RANGE_DAYS,
            Self::Day => MAX_DAY_RANGE_DAYS,
        }
    }
}

/// `[start, end)` widened to whole windows (aggregates exist per hour and per day, nothing finer).
#[derive(Debug, Clone, Copy)]
pub(super) struct Range {
    pub(super) start: DateTime<Utc>,
    pub(super) end: DateTime<Utc>,
}

impl Range {
    /// Reads `start`/`startTime` and `end`/`endTime`, aligned outward to `unit`, at most
    /// `max_days` long.
    fn read(
        params: &mut QueryParams<'_>,
        unit: Window,
        max_days: i64,
        context: &str,
    ) -> Option<Self> {
        let start = params.instant("start", Some("startTime"));
        let end = params.instant("end", Some("endTime"));
        Self::checked(
            params,
            (start?, end?),
            ("end", "start"),
            unit,
            max_days,
            context,
        )
    }

    /// A report's `from`/`to` (dates allowed), aligned outward to hours, at most 400 days.
    pub(super) fn read_report(params: &mut QueryParams<'_>) -> Option<Self> {
        let from = params.report_bound("from", false);
        let to = params.report_bound("to", true);
        Self::checked(
            params,
            (from?, to?),
            ("to", "from"),
            Window::Hour,
            MAX_DAY_RANGE_DAYS,
            "",
        )
    }

    /// `[start, end)` aligned outward to `unit` if it is not empty and at most `max_days` long;
    /// problems are reported on `names.0`, the end's parameter.
    fn checked(
        params: &mut QueryParams<'_>,
        (start, end): (DateTime<Utc>, DateTime<Utc>),
        names: (&str, &str),
        unit: Window,
        max_days: i64,
        context: &str,
    ) -> Option<Self> {
        let (end_name, start_name) = names;
        if end <= start {
            params.error(end_name, format!("must be after {start_name}"));
            return None;
        }
        let range = Self {
            start: floor(start, unit),
            end: ceil(end, unit),
        };
        if range.end - range.start > Duration::days(max_days) {
            params.error(
                end_name,
                format!("must be at most {max_days} days after {start_name}{context}"),
            );
            return None;
        }
        Some(range)
    }

    /// The UTC days the range touches.
    fn days(&self) -> Vec<NaiveDate> {
        let last = (self.end - Duration::milliseconds(1)).date_naive();
        self.start
            .date_naive()
            .iter_days()
            .take_while(|d| *d <= last)
            .collect()
    }

    fn contains(&self, t: DateTime<Utc>) -> bool {
        self.start <= t && t < self.end
    }
}

fn floor(t: DateTime<Utc>, unit: Window) -> DateTime<Utc> {
    let unit_ms = unit.length().num_milliseconds();
    let ms = t.timestamp_millis();
    DateTime::from_timestamp_millis(ms - ms.rem_euclid(unit_ms)).unwrap_or(t)
}

fn ceil(t: DateTime<Utc>, unit: Window) -> DateTime<Utc> {
    let floored = floor(t, unit);
    if floored == t {
        t
    } else {
        // Parameters are limited to years 1-9999, so this cannot overflow; if it could, the
        // floor would be the safe answer, never a panic.
        floored.checked_add_signed(unit.length()).unwrap_or(floored)
    }
}

/// The aggregates of `range` as windows with their start, in time order, every day read once and
/// concurrently. With `whole_days`, a day the range covers entirely is one window (its daily
/// summary, a fraction of its hours' size); every other day gives its hours inside the range.
pub(super) async fn read_windows<R: AggregateReader + ?Sized>(
    reader: &R,
    range: &Range,
    whole_days: bool,
) -> Result<Vec<(DateTime<Utc>, WindowAggregates)>, ApiError> {
    let days: Vec<Vec<(DateTime<Utc>, WindowAggregates)>> = futures::stream::iter(range.days())
        .map(|day| async move {
            let key = day.format("%Y-%m-%d").to_string();
            let start = day.and_time(NaiveTime::MIN).and_utc();
            if whole_days && range.start <= start && start + Duration::days(1) <= range.end {
                return Ok(vec![(start, reader.whole_day(&key).await?)]);
            }
            let hours = reader.day(&key).await?.hours.into_iter();
            Ok(hours
                .filter_map(|(hour, aggregates)| Some((hour_start(&hour)?, aggregates)))
                .filter(|(start, _)| range.contains(*start))
                .collect())
        })
        .buffered(READ_CONCURRENCY)
        .try_collect()
        .await
        .map_err(ApiError::analytics_down)?;
    Ok(days.into_iter().flatten().collect())
}

/// The aggregates of the whole range, merged.
pub(super) async fn read_total<R: AggregateReader + ?Sized>(
    reader: &R,
    range: &Range,
) -> Result<WindowAggregates, ApiError> {
    let mut total = WindowAggregates::default();
    for (_, aggregates) in read_windows(reader, range, true).await? {
        total.merge(&aggregates);
    }
    Ok(total)
}

/// `YYYY-MM-DDTHH` as an instant.
pub(crate) fn hour_start(key: &str) -> Option<DateTime<Utc>> {
    let day = NaiveDate::parse_from_str(key.get(..10)?, "%Y-%m-%d").ok()?;
    let hour: u32 = key.get(11..13)?.parse().ok()?;
    Some(day.and_hms_opt(hour, 0, 0)?.and_utc())
}

pub(super) fn revenue_json(revenue: &BTreeMap<String, Decimal>) -> Value {
    Value::Object(
        revenue
            .iter()
            .map(|(currency, amount)| (currency.clone(), Value::String(amount.to_string())))
            .collect(),
    )
}

/// A dimension filter's value: 1–128 characters.
pub(super) fn dimension_value<'a>(
    params: &mut QueryParams<'a>,
    name: &'static str,
) -> Option<&'a str> {
    let value = params.text(name, None)?;
    if value.is_empty() || value.chars().count() > MAX_VALUE_LEN {
        params.error(name, format!("must be 1 to {MAX_VALUE_LEN} characters"));
        return None;
    }
    Some(value)
}

pub(super) fn event_type<'a>(params: &mut QueryParams<'a>) -> Option<&'a str> {
    dimension_value(params, "type")
}

/// The ISO 4217 currency revenue is ranked in, `USD` when absent.
pub(super) fn currency(params: &mut QueryParams<'_>) -> Option<String> {
    let Some(code) = params.text("currency", None) else {
        return Some("USD".to_owned());
    };
    let upper = code.to_ascii_uppercase();
    match check_currency(&upper) {
        Ok(()) => Some(upper),
        Err(message) => {
            params.error("currency", message);
            None
        }
    }
}

const WINDOWS: [(&str, Window); 2] = [("hour", Window::Hour), ("day", Window::Day)];

/// `GET /v1/aggregations`.
pub(crate) async fn aggregations<R: AggregateReader + ?Sized>(
    reader: &R,
    request: &HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let mut params = QueryParams::new(
        request,
        &[
            "window",
            "start",
            "startTime",
            "end",
            "endTime",
            "type",
            "campaignId",
            "regionId",
            "source",
            "funnelStage",
        ],
    );
    let window = params.required("window", None);
    let window = params.choice("window", window, &WINDOWS);
    let range = window.and_then(|w| {
        let context = format!(" for window={}", w.as_str());
        Range::read(&mut params, w, w.max_range_days(), &context)
    });
    if window.is_none() {
        // Still report bad times along with the bad window.
        Range::read(&mut params, Window::Hour, MAX_DAY_RANGE_DAYS, "");
    }
    let event_type = event_type(&mut params);
    let mut dimensions: Vec<(Dimension, &str)> = Vec::new();
    for (name, dimension) in [
        ("campaignId", Dimension::CampaignId),
        ("regionId", Dimension::RegionId),
        ("source", Dimension::Source),
        ("funnelStage", Dimension::FunnelStage),
    ] {
        if let Some(value) = dimension_value(&mut params, name) {
            dimensions.push((dimension, value));
        }
    }
    let stage = match dimensions
        .iter()
        .find(|(d, _)| *d == Dimension::FunnelStage)
    {
        Some((_, value)) => {
            let stage = FunnelStage::parse(value);
            if stage.is_none() {
                params.error("funnelStage", "must be one of top, middle, bottom");
            }
            stage
        }
        None => None,
    };
    let (window, range) = params.finish(window.zip(range))?;
    let filter = match dimensions.as_slice() {
        [] => Filter::All,
        [(dimension, value)] => Filter::Is(*dimension, (*value).to_owned()),
        [(Dimension::Source, source), (Dimension::FunnelStage, _)] => Filter::SourceFunnelStage {
            source: (*source).to_owned(),
            funnel_stage: stage.ok_or(ApiError::Internal)?,
        },
        _ => {
            return Err(ApiError::UnsupportedFilter(
                "filter by one of campaignId, regionId, source or funnelStage, or by source together with funnelStage".into(),
            ))
        }
    };
    let mut filters = Map::new();
    if let Some(ty) = event_type {
        filters.insert("type".into(), json!(ty));
    }
    for (dimension, value) in &dimensions {
        filters.insert(dimension.as_str().into(), json!(value));
    }

    let stored = read_windows(reader, &range, window == Window::Day).await?;
    // Windows in time order; within one, types in order (the maps are sorted).
    let mut windows: BTreeMap<DateTime<Utc>, BTreeMap<String, Totals>> = BTreeMap::new();
    for (start, aggregates) in &stored {
        let bucket = windows.entry(floor(*start, window)).or_default();
        for (ty, totals) in aggregates.buckets_for(&filter) {
            if event_type.is_some_and(|wanted| wanted != ty) {
                continue;
            }
            bucket.entry(ty).or_default().merge(&totals);
        }
    }
    let buckets: Vec<Value> = windows
        .into_iter()
        .flat_map(|(start, types)| {
            types
                .into_iter()
                .filter(|(_, t)| t.count > 0)
                .map(move |(ty, totals)| {
                    json!({
                        "windowStart": format_utc(start),
                        "type": ty,
                        "count": totals.count,
                        "revenue": revenue_json(&totals.revenue),
                    })
                })
        })
        .collect();
    Ok(HttpResponse::json(
        200,
        &json!({
            "window": window.as_str(),
            "start": format_utc(range.start),
            "end": format_utc(range.end),
            "filters": filters,
            "buckets": buckets,
        }),
    ))
}

const METRICS: [(&str, bool); 3] = [("count", false), ("revenue", true), ("sum.revenue", true)];
const DIMENSIONS: [(&str, Dimension); 4] = [
    ("campaignId", Dimension::CampaignId),
    ("regionId", Dimension::RegionId),
    ("source", Dimension::Source),
    ("funnelStage", Dimension::FunnelStage),
];

/// `GET /v1/aggregations/top` (also `/top-performing`).
pub(crate) async fn top<R: AggregateReader + ?Sized>(
    reader: &R,
    request: &HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let mut params = QueryParams::new(
        request,
        &[
            "metric",
            "dimension",
            "type",
            "start",
            "startTime",
            "end",
            "endTime",
            "limit",
            "currency",
        ],
    );
    let metric = params.required("metric", None);
    let by_revenue = params.choice("metric", metric, &METRICS);
    let dimension = params.required("dimension", None);
    let dimension = params.choice("dimension", dimension, &DIMENSIONS);
    let event_type = event_type(&mut params);
    let range = Range::read(&mut params, Window::Hour, MAX_DAY_RANGE_DAYS, "");
    let limit = params.integer("limit", 1, 100, 10);
    let currency = currency(&mut params);
    let (((by_revenue, dimension), range), (limit, currency)) = params.finish(
        by_revenue
            .zip(dimension)
            .zip(range)
            .zip(limit.zip(currency)),
    )?;
    let metric = if by_revenue {
        Metric::Revenue(currency.clone())
    } else {
        Metric::Count
    };

    let results: Vec<Value> = read_total(reader, &range)
        .await?
        .top(dimension, event_type, &metric)
        .into_iter()
        .take(limit as usize)
        .enumerate()
        .map(|(i, (value, totals))| {
            json!({
                "rank": i + 1,
                "value": value,
                "count": totals.count,
                "revenue": revenue_json(&totals.revenue),
            })
        })
        .collect();
    let mut body = json!({
        "metric": if by_revenue { "revenue" } else { "count" },
        "dimension": dimension.as_str(),
        "type": event_type,
        "start": format_utc(range.start),
        "end": format_utc(range.end),
        "results": results,
    });
    if by_revenue {
        body["currency"] = json!(currency);
    }
    Ok(HttpResponse::json(200, &body))
}
