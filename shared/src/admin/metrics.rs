//! `GET /v1/admin/metrics` (and EventFlow's `GET /admin/metrics`): the pipeline at a glance.
//! The counters `ingest` and `process` keep (totals since the stack began, processing times as a
//! histogram), the events of the last 24 hours by type (the hourly aggregates of today and
//! yesterday), the queues' depths, and the leads the scorer could not write.

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{DateTime, Duration, DurationRound, Utc};
use serde_json::{json, Value};

use crate::aggregation::AggregateReader;
use crate::counters::CounterSink;
use crate::error::ApiError;
use crate::event::format_utc;
use crate::ops::QueueStats;
use crate::query::aggregations::hour_start;
use crate::rollup::Filter;
use crate::scoring::LeadFailures;

/// How far back `eventsByType` counts.
const TYPES_WINDOW_HOURS: i64 = 24;

/// Failed leads counted at most (`failedLeads`), and listed (`failures`).
const MAX_FAILED_LEADS_COUNTED: usize = 10_000;
const FAILED_LEADS_SHOWN: usize = 20;

pub(super) async fn metrics(
    counters: &dyn CounterSink,
    aggregates: &dyn AggregateReader,
    work: &Arc<dyn QueueStats>,
    dead_letter: &Arc<dyn QueueStats>,
    lead_failures: &dyn LeadFailures,
    now: DateTime<Utc>,
) -> Result<Value, ApiError> {
    let since = (now - Duration::hours(TYPES_WINDOW_HOURS))
        .duration_trunc(Duration::hours(1))
        .map_err(|_| ApiError::Internal)?;
    let days: Vec<String> = since
        .date_naive()
        .iter_days()
        .take_while(|d| *d <= now.date_naive())
        .map(|d| d.format("%Y-%m-%d").to_string())
        .collect();
    let (totals, rollups, work_depth, dead_depth, failed_leads) = futures::try_join!(
        async { counters.totals().await.map_err(ApiError::analytics_down) },
        async {
            futures::future::try_join_all(days.iter().map(|d| aggregates.day(d)))
                .await
                .map_err(ApiError::analytics_down)
        },
        async {
            work.depth()
                .await
                .map_err(|_| ApiError::unavailable("work queue"))
        },
        async {
            dead_letter
                .depth()
                .await
                .map_err(|_| ApiError::unavailable("dead-letter queue"))
        },
        async {
            lead_failures
                .failures(MAX_FAILED_LEADS_COUNTED)
                .await
                .map_err(ApiError::analytics_down)
        },
    )?;

    let mut by_type: BTreeMap<String, u64> = BTreeMap::new();
    for rollup in &rollups {
        for (hour, window) in &rollup.hours {
            let Some(start) = hour_start(hour) else {
                continue;
            };
            if start < since || start > now {
                continue;
            }
            for (event_type, totals) in window.buckets_for(&Filter::All) {
                *by_type.entry(event_type).or_default() += totals.count;
            }
        }
    }
    let mut by_type: Vec<(String, u64)> = by_type.into_iter().filter(|(_, n)| *n > 0).collect();
    by_type.sort_by(|(a, x), (b, y)| y.cmp(x).then(a.cmp(b)));

    let seconds = |ms: Option<f64>| ms.map_or(Value::Null, |ms| json!(ms / 1000.0));
    let latency = &totals.latency;
    Ok(json!({
            "summary": {
                "accepted": totals.accepted_by_source.values().sum::<u64>(),
                "processed": totals.processed,
                "duplicates": totals.duplicate,
                "failed": totals.failed,
                "deadLetter": totals.dead_lettered,
                "rejected": totals.rejected,
            },
            "eventsByType": by_type
                .iter()
                .map(|(t, n)| json!({"eventType": t, "count": n}))
                .collect::<Vec<_>>(),
            "eventsByTypeSince": format_utc(since),
            "processingStats": {
                "averageProcessingTimeSeconds": seconds(latency.mean_ms()),
                "p95ProcessingTimeSeconds": seconds(latency.quantile_bound_ms(0.95).map(|ms| ms as f64)),
                "totalProcessed": latency.count(),
            },
            "queues": {
                "workDepth": work_depth.visible,
                "workInFlight": work_depth.in_flight,
                "deadLetterDepth": dead_depth.visible,
            },
            "scoring": {
                "failedLeads": failed_leads.len(),
                "failures": failed_leads
                    .iter()
                    .take(FAILED_LEADS_SHOWN)
                    .map(|f| json!({"leadId": f.lead_id, "reason": f.reason, "failedAt": format_utc(f.failed_at)}))
                    .collect::<Vec<_>>(),
            },
    }))
}

/// The EventFlow service's metrics shape, from the v1 answer: `total` is every event accepted,
/// `pending` and `processing` the work queue's waiting and in-flight messages.
pub(super) fn eventflow(v1: &Value) -> Value {
    let summary = &v1["summary"];
    let queues = &v1["queues"];
    let stats = &v1["processingStats"];
    json!({
        "summary": {
            "total": summary["accepted"],
            "pending": queues["workDepth"],
            "processing": queues["workInFlight"],
            "processed": summary["processed"],
            "failed": summary["failed"],
            "deadLetter": summary["deadLetter"],
        },
        "eventsByType": v1["eventsByType"],
        "processingStats": {
            "averageProcessingTimeSeconds": stats["averageProcessingTimeSeconds"],
            "totalProcessed": stats["totalProcessed"],
        },
    })
}
