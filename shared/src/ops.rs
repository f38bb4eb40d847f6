//! Operational reads: queue depths, dependency checks, and the Prometheus exposition of the
//! pipeline counters (`GET /metrics`, `GET /health/ready`).

use std::fmt::Write;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::future::join_all;

use crate::counters::{CounterDelta, LATENCY_BOUNDS_MS};
use crate::request_latency::{RouteLatencies, REQUEST_BOUNDS_MS};
use crate::store::StoreError;

/// Messages in a queue, as SQS approximates them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueueDepth {
    /// Waiting to be received.
    pub visible: u64,
    /// Received and not yet deleted.
    pub in_flight: u64,
}

#[async_trait]
pub trait QueueStats: Send + Sync {
    async fn depth(&self) -> Result<QueueDepth, StoreError>;
}

/// Something the function needs to answer: a table or a queue.
#[async_trait]
pub trait Dependency: Send + Sync {
    /// `Ok` when it answers and can be used.
    async fn ping(&self) -> Result<(), StoreError>;
}

/// A queue as `/metrics` labels it (`work`, `dead_letter`) and errors name it (`work queue`).
#[derive(Clone)]
pub struct NamedQueue {
    pub label: &'static str,
    pub name: &'static str,
    pub stats: Arc<dyn QueueStats>,
}

/// A dependency as `/health/ready` names it (`analytics table`, `work queue`, ...).
#[derive(Clone)]
pub struct NamedDependency {
    pub name: &'static str,
    pub dependency: Arc<dyn Dependency>,
}

/// How long a readiness check waits for one dependency.
const PING_TIMEOUT: Duration = Duration::from_secs(3);

/// How long one readiness answer is reused. `/health/ready` needs no key, so without a cache
/// every unauthenticated request would cost an AWS call per dependency.
pub const READINESS_TTL: Duration = Duration::from_secs(5);

/// The last readiness check of this execution environment, reused for its time to live;
/// concurrent requests wait for one check rather than each making their own.
pub struct ReadinessCache {
    ttl: Duration,
    last: tokio::sync::Mutex<Option<(tokio::time::Instant, Vec<&'static str>)>>,
}

impl ReadinessCache {
    pub fn new(ttl: Duration) -> Self {
        Self {
            ttl,
            last: tokio::sync::Mutex::new(None),
        }
    }

    /// The dependencies that do not answer, as of at most `ttl` ago.
    pub async fn unready(&self, dependencies: &[NamedDependency]) -> Vec<&'static str> {
        let mut last = self.last.lock().await;
        if let Some((at, failed)) = last.as_ref() {
            if at.elapsed() < self.ttl {
                return failed.clone();
            }
        }
        let failed = unready(dependencies).await;
        *last = Some((tokio::time::Instant::now(), failed.clone()));
        failed
    }
}

/// Pings every dependency at once; returns the names of those that failed or did not answer in
/// time, in the order given.
pub async fn unready(dependencies: &[NamedDependency]) -> Vec<&'static str> {
    let checks = dependencies.iter().map(|d| async move {
        match tokio::time::timeout(PING_TIMEOUT, d.dependency.ping()).await {
            Ok(Ok(())) => None,
            Ok(Err(e)) => {
                tracing::warn!(dependency = d.name, error = %e, "dependency not ready");
                Some(d.name)
            }
            Err(_) => {
                tracing::warn!(dependency = d.name, "dependency did not answer in time");
                Some(d.name)
            }
        }
    });
    join_all(checks).await.into_iter().flatten().collect()
}

/// The counters, request times and queue depths in the Prometheus text format, version 0.0.4.
pub fn prometheus(
    counters: &CounterDelta,
    routes: &RouteLatencies,
    queues: &[(&str, QueueDepth)],
) -> String {
    let mut out = String::new();
    for (name, help, counts) in [
        (
            "tally_events_accepted_total",
            "Events accepted by ingest (queued), by source.",
            &counters.accepted_by_source,
        ),
        (
            "tally_events_processed_by_source_total",
            "Events stored by process, by the source their acceptance was counted under.",
            &counters.processed_by_source,
        ),
        (
            "tally_events_failed_by_source_total",
            "Failed attempts to store an event, by the source its acceptance was counted under.",
            &counters.failed_by_source,
        ),
    ] {
        family(&mut out, name, "counter", help);
        for (source, n) in counts {
            let _ = writeln!(out, "{name}{{source=\"{}\"}} {n}", label_value(source));
        }
    }
    for (name, help, n) in [
        (
            "tally_events_processed_total",
            "Events stored by process.",
            counters.processed,
        ),
        (
            "tally_events_duplicate_total",
            "Events whose id was already stored (counted, not stored again).",
            counters.duplicate,
        ),
        (
            "tally_events_failed_total",
            "Attempts to store an event that failed and will be retried.",
            counters.failed,
        ),
        (
            "tally_events_dead_lettered_total",
            "Events that exhausted their retries and went to the dead-letter queue.",
            counters.dead_lettered,
        ),
        (
            "tally_events_rejected_total",
            "Events refused as invalid, at ingest or at process.",
            counters.rejected,
        ),
    ] {
        family(&mut out, name, "counter", help);
        let _ = writeln!(out, "{name} {n}");
    }
    let processing = &counters.latency;
    histogram(
        &mut out,
        "tally_processing_duration_seconds",
        "Time from acceptance to storage of each processed event.",
        [(
            None,
            &LATENCY_BOUNDS_MS[..],
            &processing.buckets[..],
            processing.sum_ms,
        )],
    );
    histogram(
        &mut out,
        "tally_http_request_duration_seconds",
        "Time the HTTP functions took to answer, by route (each environment adds its own at most every 10 s).",
        routes.iter().map(|(route, h)| {
            (
                Some(route.as_str()),
                &REQUEST_BOUNDS_MS[..],
                &h.buckets[..],
                h.sum_ms,
            )
        }),
    );
    for (name, help, value) in [
        (
            "tally_queue_depth",
            "Messages waiting in a queue (approximate).",
            (|d: &QueueDepth| d.visible) as fn(&QueueDepth) -> u64,
        ),
        (
            "tally_queue_in_flight",
            "Messages received from a queue and not yet deleted (approximate).",
            |d: &QueueDepth| d.in_flight,
        ),
    ] {
        family(&mut out, name, "gauge", help);
        for (queue, depth) in queues {
            let _ = writeln!(
                out,
                "{name}{{queue=\"{}\"}} {}",
                label_value(queue),
                value(depth)
            );
        }
    }
    out
}

/// A histogram family: per series (its `route` label, if any), cumulative buckets in seconds,
/// then the sum and the count.
fn histogram<'a>(
    out: &mut String,
    name: &str,
    help: &str,
    series: impl IntoIterator<Item = (Option<&'a str>, &'a [u64], &'a [u64], u64)>,
) {
    family(out, name, "histogram", help);
    for (route, bounds, buckets, sum_ms) in series {
        let label = route.map_or(String::new(), |r| format!("route=\"{}\",", label_value(r)));
        let mut cumulative = 0u64;
        for (i, n) in buckets.iter().enumerate() {
            cumulative += n;
            let le = bounds.get(i).map_or("+Inf".to_owned(), |ms| seconds(*ms));
            let _ = writeln!(out, "{name}_bucket{{{label}le=\"{le}\"}} {cumulative}");
        }
        let label = label.trim_end_matches(',');
        let braces = if label.is_empty() {
            String::new()
        } else {
            format!("{{{label}}}")
        };
        let _ = writeln!(out, "{name}_sum{braces} {}", seconds(sum_ms));
        let _ = writeln!(out, "{name}_count{braces} {cumulative}");
    }
}

/// Milliseconds as seconds, without trailing zeros (`0.005`, `2.5`, `30`).
fn seconds(ms: u64) -> String {
    let whole = ms / 1000;
    let fraction = ms % 1000;
    if fraction == 0 {
        whole.to_string()
    } else {
        format!("{whole}.{:03}", fraction)
            .trim_end_matches('0')
            .to_owned()
    }
}

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// A label value escaped as the text format requires (`\`, `"` and newlines).
fn label_value(value: &str) -> String {
    let mut escaped = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => escaped.push_str("\\\\"),
            '"' => escaped.push_str("\\\""),
            '\n' => escaped.push_str("\\n"),
            c => escaped.push(c),
        }
    }
    escaped
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    #[test]
    fn exposition_lists_every_family_with_help_type_and_escaped_labels() {
        let counters = CounterDelta {
            accepted_by_source: BTreeMap::from([("web".into(), 7), ("we\"b\\\n".into(), 1)]),
            processed: 5,
            duplicate: 1,
            failed: 2,
            rejected: 3,
            dead_lettered: 4,
            processed_by_source: BTreeMap::from([("web".into(), 5)]),
            failed_by_source: BTreeMap::from([("(other)".into(), 2)]),
            latency: Default::default(),
        };
        let mut counters = counters;
        for ms in [80, 400, 400] {
            counters.latency.record(ms);
        }
        let mut leads = crate::request_latency::RouteHistogram::default();
        for ms in [3, 30, 30, 2_000, 45_000] {
            leads.record(ms);
        }
        let routes = RouteLatencies::from([("GET /v1/leads".to_owned(), leads)]);
        let text = prometheus(
            &counters,
            &routes,
            &[
                (
                    "work",
                    QueueDepth {
                        visible: 9,
                        in_flight: 2,
                    },
                ),
                ("dead_letter", QueueDepth::default()),
            ],
        );
        for line in [
            "# TYPE tally_events_accepted_total counter",
            "tally_events_accepted_total{source=\"web\"} 7",
            "tally_events_accepted_total{source=\"we\\\"b\\\\\\n\"} 1",
            "tally_events_processed_total 5",
            "tally_events_duplicate_total 1",
            "tally_events_failed_total 2",
            "tally_events_dead_lettered_total 4",
            "tally_events_rejected_total 3",
            "# TYPE tally_queue_depth gauge",
            "tally_queue_depth{queue=\"work\"} 9",
            "tally_queue_depth{queue=\"dead_letter\"} 0",
            "tally_queue_in_flight{queue=\"work\"} 2",
            "tally_events_processed_by_source_total{source=\"web\"} 5",
            "tally_events_failed_by_source_total{source=\"(other)\"} 2",
            "# TYPE tally_processing_duration_seconds histogram",
            "tally_processing_duration_seconds_bucket{le=\"0.1\"} 1",
            "tally_processing_duration_seconds_bucket{le=\"0.25\"} 1",
            "tally_processing_duration_seconds_bucket{le=\"0.5\"} 3",
            "tally_processing_duration_seconds_bucket{le=\"+Inf\"} 3",
            "tally_processing_duration_seconds_sum 0.88",
            "tally_processing_duration_seconds_count 3",
            "# TYPE tally_http_request_duration_seconds histogram",
            "tally_http_request_duration_seconds_bucket{route=\"GET /v1/leads\",le=\"0.005\"} 1",
            "tally_http_request_duration_seconds_bucket{route=\"GET /v1/leads\",le=\"0.025\"} 1",
            "tally_http_request_duration_seconds_bucket{route=\"GET /v1/leads\",le=\"0.05\"} 3",
            "tally_http_request_duration_seconds_bucket{route=\"GET /v1/leads\",le=\"2.5\"} 4",
            "tally_http_request_duration_seconds_bucket{route=\"GET /v1/leads\",le=\"30\"} 4",
            "tally_http_request_duration_seconds_bucket{route=\"GET /v1/leads\",le=\"+Inf\"} 5",
            "tally_http_request_duration_seconds_sum{route=\"GET /v1/leads\"} 47.063",
            "tally_http_request_duration_seconds_count{route=\"GET /v1/leads\"} 5",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in\n{text}"
            );
        }
        // Every sample line belongs to a family declared before it.
        let mut declared = Vec::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                declared.push(rest.split(' ').next().unwrap_or("").to_owned());
            } else if !line.starts_with('#') {
                let name = line.split(['{', ' ']).next().unwrap_or("");
                let family = ["_bucket", "_sum", "_count"]
                    .iter()
                    .find_map(|suffix| name.strip_suffix(suffix))
                    .filter(|f| declared.iter().any(|d| d == f))
                    .unwrap_or(name);
                assert!(declared.iter().any(|d| d == family), "{line}");
            }
        }
    }
}
