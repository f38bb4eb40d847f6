//! How long each HTTP route takes to answer, as Prometheus histograms for `/metrics`.
//!
//! Every request is timed, but a write per request would double what a single-event client
//! costs. Each execution environment keeps its own buckets instead and adds them to the stored
//! counters (one `ADD` per route, on one of a few shards) at most once per flush interval, on
//! the request that finds the interval passed. So an environment's last interval is lost when
//! Lambda reclaims it; CloudWatch's `RequestLatency` metric (EMF) has every request.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use tokio::sync::Mutex;
use tracing::warn;

use crate::counters::{bucket_attribute, bucket_named, bucket_of};
use crate::store::StoreError;

/// Upper bounds (milliseconds) of the request-latency buckets; the last bucket is unbounded.
pub const REQUEST_BOUNDS_MS: [u64; 12] = [
    5, 10, 25, 50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 30_000,
];

/// How often an execution environment adds its buckets to the stored ones, at most.
pub const FLUSH_EVERY: Duration = Duration::from_secs(10);

/// The label of requests that matched no route (each function's own 404s and 405s).
pub const UNMATCHED: &str = "unmatched";

/// One route's requests: their total time and a count per bucket of [`REQUEST_BOUNDS_MS`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RouteHistogram {
    pub sum_ms: u64,
    pub buckets: [u64; REQUEST_BOUNDS_MS.len() + 1],
}

impl RouteHistogram {
    pub fn record(&mut self, ms: u64) {
        self.sum_ms = self.sum_ms.saturating_add(ms);
        self.buckets[bucket_of(&REQUEST_BOUNDS_MS, ms)] += 1;
    }

    pub fn count(&self) -> u64 {
        self.buckets.iter().sum()
    }

    pub fn merge(&mut self, other: &Self) {
        self.sum_ms = self.sum_ms.saturating_add(other.sum_ms);
        for (mine, theirs) in self.buckets.iter_mut().zip(&other.buckets) {
            *mine += theirs;
        }
    }

    /// The stored attribute of bucket `i`: `le<ms>`, or `inf` for the unbounded one.
    pub fn attribute(i: usize) -> String {
        bucket_attribute(&REQUEST_BOUNDS_MS, "", i)
    }

    /// Non-zero counters as (attribute, amount): `sumMs` and the buckets.
    pub fn entries(&self) -> Vec<(String, u64)> {
        let mut out = vec![("sumMs".to_owned(), self.sum_ms)];
        out.extend(
            self.buckets
                .iter()
                .enumerate()
                .map(|(i, n)| (Self::attribute(i), *n)),
        );
        out.retain(|(_, n)| *n > 0);
        out
    }

    /// Adds a stored counter; false when `name` is not one of [`Self::entries`]' names.
    pub fn add_attribute(&mut self, name: &str, value: u64) -> bool {
        if name == "sumMs" {
            self.sum_ms = self.sum_ms.saturating_add(value);
            return true;
        }
        match bucket_named(&REQUEST_BOUNDS_MS, "", name) {
            Some(i) => {
                self.buckets[i] += value;
                true
            }
            None => false,
        }
    }
}

/// Histograms by route name. Route names come from the functions' route tables, never from a
/// request, so their number is bounded by the code.
pub type RouteLatencies = BTreeMap<String, RouteHistogram>;

#[async_trait]
pub trait LatencyStore: Send + Sync {
    /// Adds one route's histogram to the stored one.
    async fn add(&self, route: &str, histogram: &RouteHistogram) -> Result<(), StoreError>;
    /// The stored histograms, summed over shards.
    async fn totals(&self) -> Result<RouteLatencies, StoreError>;
}

/// One execution environment's requests since its last flush.
pub struct LatencyBuffer {
    store: Arc<dyn LatencyStore>,
    every: Duration,
    pending: Mutex<(Instant, RouteLatencies)>,
}

impl LatencyBuffer {
    pub fn new(store: Arc<dyn LatencyStore>, every: Duration) -> Self {
        Self {
            store,
            every,
            pending: Mutex::new((Instant::now(), RouteLatencies::new())),
        }
    }

    /// Records one request, and flushes what is pending when the interval has passed. A failed
    /// flush keeps its histograms for the next one: they are observability, never worth failing
    /// a request for.
    pub async fn record(&self, route: &str, elapsed: Duration) {
        self.record_at(route, elapsed, Instant::now()).await;
    }

    async fn record_at(&self, route: &str, elapsed: Duration, now: Instant) {
        let due = {
            let mut pending = self.pending.lock().await;
            let ms = u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX);
            pending.1.entry(route.to_owned()).or_default().record(ms);
            if now.saturating_duration_since(pending.0) < self.every {
                return;
            }
            pending.0 = now;
            std::mem::take(&mut pending.1)
        };
        // Route by route, so a failed write keeps its own histogram only: one kept after it
        // was stored would be counted twice.
        let written = futures::future::join_all(
            due.iter()
                .map(|(route, histogram)| self.store.add(route, histogram)),
        )
        .await;
        let mut pending = self.pending.lock().await;
        for ((route, histogram), outcome) in due.into_iter().zip(written) {
            if let Err(error) = outcome {
                warn!(%error, route, "request latencies not stored; kept for the next flush");
                pending.1.entry(route).or_default().merge(&histogram);
            }
        }
    }
}

/// Histograms in memory, for unit tests; writes of the routes in `down` fail.
#[derive(Default)]
pub struct MemoryLatencies {
    stored: std::sync::Mutex<RouteLatencies>,
    pub down: std::sync::Mutex<Vec<String>>,
}

#[async_trait]
impl LatencyStore for MemoryLatencies {
    async fn add(&self, route: &str, histogram: &RouteHistogram) -> Result<(), StoreError> {
        let down = self
            .down
            .lock()
            .map_err(|_| StoreError::Unavailable("lock".into()))?;
        if down.iter().any(|r| r == route) {
            return Err(StoreError::Unavailable("down".into()));
        }
        let mut stored = self
            .stored
            .lock()
            .map_err(|_| StoreError::Unavailable("lock".into()))?;
        stored.entry(route.to_owned()).or_default().merge(histogram);
        Ok(())
    }

    async fn totals(&self) -> Result<RouteLatencies, StoreError> {
        self.stored
            .lock()
            .map(|s| s.clone())
            .map_err(|_| StoreError::Unavailable("lock".into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_fall_in_buckets_and_read_back_from_their_attributes() {
        let mut h = RouteHistogram::default();
        for ms in [0, 5, 6, 99, 100, 30_000, 30_001, 90_000] {
            h.record(ms);
        }
        assert_eq!(h.count(), 8);
        assert_eq!(h.sum_ms, 150_211);
        assert_eq!(
            h.buckets,
            [2, 1, 0, 0, 2, 0, 0, 0, 0, 0, 0, 1, 2],
            "bounds are inclusive; past the last bound is the unbounded bucket"
        );
        let mut read_back = RouteHistogram::default();
        for (name, n) in h.entries() {
            assert!(read_back.add_attribute(&name, n), "{name}");
        }
        assert_eq!(read_back, h);
        assert!(!read_back.add_attribute("le7", 1));
    }

    #[tokio::test]
    async fn an_environment_writes_at_most_once_an_interval_and_keeps_what_a_failed_write_held() {
        let store = Arc::new(MemoryLatencies::default());
        let buffer = LatencyBuffer::new(store.clone(), FLUSH_EVERY);
        let start = Instant::now();
        let ms = Duration::from_millis;
        buffer.record_at("GET /v1/leads", ms(20), start).await;
        buffer
            .record_at("GET /v1/leads", ms(40), start + ms(9_999))
            .await;
        assert!(
            store.totals().await.unwrap_or_default().is_empty(),
            "not yet due"
        );

        // One route's write fails: only its histogram is kept for the next flush.
        let later = start + FLUSH_EVERY;
        let set_down = |routes: &[&str]| {
            if let Ok(mut down) = store.down.lock() {
                *down = routes.iter().map(|r| (*r).to_owned()).collect();
            }
        };
        set_down(&["POST /v1/events"]);
        buffer.record_at("POST /v1/events", ms(7), later).await;
        let stored = store.totals().await.unwrap_or_default();
        assert_eq!(stored.keys().collect::<Vec<_>>(), ["GET /v1/leads"]);
        assert_eq!(stored["GET /v1/leads"].count(), 2);

        set_down(&[]);
        buffer
            .record_at("GET /v1/leads", ms(1), later + ms(1))
            .await;
        assert_eq!(
            store.totals().await.unwrap_or_default()["GET /v1/leads"].count(),
            2,
            "the interval restarted"
        );
        buffer
            .record_at("GET /v1/leads", ms(3_000), later + FLUSH_EVERY)
            .await;
        let stored = store.totals().await.unwrap_or_default();
        assert_eq!(stored["GET /v1/leads"].count(), 4);
        assert_eq!(stored["GET /v1/leads"].sum_ms, 3_061);
        assert_eq!(stored["POST /v1/events"].count(), 1);
    }
}
