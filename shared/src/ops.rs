//! Operational reads: queue depths, dependency checks, and the Prometheus exposition of the
//! pipeline counters (`GET /metrics`, `GET /health/ready`).

use std::fmt::Write;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::future::join_all;

use crate::counters::CounterDelta;
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

/// The counters and queue depths in the Prometheus text format, version 0.0.4.
pub fn prometheus(counters: &CounterDelta, queues: &[(&str, QueueDepth)]) -> String {
    let mut out = String::new();
    family(
        &mut out,
        "tally_events_accepted_total",
        "counter",
        "Events accepted by ingest (queued), by source.",
    );
    for (source, n) in &counters.accepted_by_source {
        let _ = writeln!(
            out,
            "tally_events_accepted_total{{source=\"{}\"}} {n}",
            label_value(source)
        );
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
    family(
        &mut out,
        "tally_queue_depth",
        "gauge",
        "Messages waiting in a queue (approximate).",
    );
    for (queue, depth) in queues {
        let _ = writeln!(
            out,
            "tally_queue_depth{{queue=\"{}\"}} {}",
            label_value(queue),
            depth.visible
        );
    }
    family(
        &mut out,
        "tally_queue_in_flight",
        "gauge",
        "Messages received from a queue and not yet deleted (approximate).",
    );
    for (queue, depth) in queues {
        let _ = writeln!(
            out,
            "tally_queue_in_flight{{queue=\"{}\"}} {}",
            label_value(queue),
            depth.in_flight
        );
    }
    out
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
            latency: Default::default(),
        };
        let text = prometheus(
            &counters,
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
                assert!(declared.iter().any(|d| d == name), "{line}");
            }
        }
    }
}
