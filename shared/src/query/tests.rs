//! The query routes' contract without storage: auth, routing and every 400, with a reader that
//! counts its calls (a refused request must not read anything).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde_json::Value;

use super::{QueryApi, QueryPorts};
use crate::aggregation::AggregateReader;
use crate::auth::ApiKeys;
use crate::counters::{CounterDelta, CounterSink};
use crate::http::HttpRequest;
use crate::ops::{Dependency, NamedDependency, NamedQueue, QueueDepth, QueueStats};
use crate::request_latency::{LatencyBuffer, MemoryLatencies};
use crate::rollup::{Rollup, WindowAggregates};
use crate::scoring::{MemoryHistory, MemoryLeads, MemoryRules};
use crate::store::StoreError;

#[derive(Default)]
pub(super) struct CountingReader {
    /// Days read, by the hour or whole.
    reads: AtomicUsize,
    /// Of those, days read whole (their daily summary).
    whole: AtomicUsize,
    down: bool,
}

impl CountingReader {
    fn read(&self) -> Result<(), StoreError> {
        self.reads.fetch_add(1, Ordering::SeqCst);
        if self.down {
            return Err(StoreError::Unavailable("secret internals".into()));
        }
        Ok(())
    }

    fn counts(&self) -> (usize, usize) {
        (
            self.reads.load(Ordering::SeqCst),
            self.whole.load(Ordering::SeqCst),
        )
    }
}

#[async_trait]
impl AggregateReader for CountingReader {
    async fn day(&self, _: &str) -> Result<Rollup, StoreError> {
        self.read()?;
        Ok(Rollup::default())
    }

    async fn whole_day(&self, _: &str) -> Result<WindowAggregates, StoreError> {
        self.whole.fetch_add(1, Ordering::SeqCst);
        self.read()?;
        Ok(WindowAggregates::default())
    }
}

type Api = QueryApi;

/// The API over in-memory ports, with handles on them.
pub(super) struct Fixture {
    pub(super) api: QueryApi,
    aggregates: Arc<CountingReader>,
    leads: Arc<MemoryLeads>,
    history: Arc<MemoryHistory>,
    rules: Arc<MemoryRules>,
    ops: Arc<FakeOps>,
}

impl std::ops::Deref for Fixture {
    type Target = QueryApi;

    fn deref(&self) -> &QueryApi {
        &self.api
    }
}

pub(super) fn api(reader: CountingReader) -> Result<Fixture, String> {
    let keys = ApiKeys::parse(&format!(
        "{}:read,{}:admin,{}:ingest",
        ApiKeys::digest("r"),
        ApiKeys::digest("a"),
        ApiKeys::digest("i")
    ))?;
    let aggregates = Arc::new(reader);
    let leads = Arc::new(MemoryLeads::default());
    let history = Arc::new(MemoryHistory::default());
    let rules = Arc::new(MemoryRules::default());
    let ops = Arc::new(FakeOps::default());
    let latencies = Arc::new(MemoryLatencies::default());
    let queue = |label, name| NamedQueue {
        label,
        name,
        stats: ops.clone(),
    };
    let ports = QueryPorts {
        aggregates: aggregates.clone(),
        rules: rules.clone(),
        leads: leads.clone(),
        history: history.clone(),
        counters: ops.clone(),
        latencies: latencies.clone(),
        queues: vec![queue("work", "work queue")],
        dependencies: vec![
            NamedDependency {
                name: "analytics table",
                dependency: Arc::new(FakeDependency(true, Default::default())),
            },
            NamedDependency {
                name: "work queue",
                dependency: ops.clone(),
            },
        ],
    };
    Ok(Fixture {
        // Readiness answers are reused for 50 ms here, so a test sees a change after a sleep.
        // Every request's time is stored at once.
        api: QueryApi::with_readiness_ttl(keys, ports, Duration::from_millis(50))
            .with_latencies(LatencyBuffer::new(latencies, Duration::ZERO)),
        aggregates,
        leads,
        history,
        rules,
        ops,
    })
}

/// Counters and a queue, which can be made to stop answering.
#[derive(Default)]
struct FakeOps {
    queue_down: std::sync::atomic::AtomicBool,
}

#[async_trait]
impl CounterSink for FakeOps {
    async fn add(&self, _: &CounterDelta) -> Result<(), StoreError> {
        Ok(())
    }

    async fn totals(&self) -> Result<CounterDelta, StoreError> {
        Ok(CounterDelta {
            accepted_by_source: [("web".to_owned(), 12)].into(),
            processed: 10,
            duplicate: 2,
            ..CounterDelta::default()
        })
    }
}

#[async_trait]
impl QueueStats for FakeOps {
    async fn depth(&self) -> Result<QueueDepth, StoreError> {
        if self.queue_down.load(Ordering::SeqCst) {
            return Err(StoreError::Unavailable("queue internals".into()));
        }
        Ok(QueueDepth {
            visible: 3,
            in_flight: 1,
        })
    }
}

#[async_trait]
impl Dependency for FakeOps {
    async fn ping(&self) -> Result<(), StoreError> {
        self.depth().await.map(|_| ())
    }
}

/// Always up or always down; counts its pings.
#[derive(Default)]
struct FakeDependency(bool, std::sync::atomic::AtomicUsize);

#[async_trait]
impl Dependency for FakeDependency {
    async fn ping(&self) -> Result<(), StoreError> {
        self.1.fetch_add(1, Ordering::SeqCst);
        if self.0 {
            Ok(())
        } else {
            Err(StoreError::Unavailable("down".into()))
        }
    }
}

#[tokio::test]
async fn readiness_answers_are_reused_for_their_time_to_live() {
    let table = Arc::new(FakeDependency(true, Default::default()));
    let cache = crate::ops::ReadinessCache::new(Duration::from_millis(200));
    let dependencies = [NamedDependency {
        name: "analytics table",
        dependency: table.clone(),
    }];
    for _ in 0..20 {
        assert!(cache.unready(&dependencies).await.is_empty());
    }
    assert_eq!(
        table.1.load(Ordering::SeqCst),
        1,
        "one check for 20 requests"
    );
    tokio::time::sleep(Duration::from_millis(250)).await;
    assert!(cache.unready(&dependencies).await.is_empty());
    assert_eq!(
        table.1.load(Ordering::SeqCst),
        2,
        "checked again once expired"
    );
}

#[tokio::test]
async fn metrics_in_prometheus_text_and_readiness_naming_what_fails() -> Result<(), String> {
    let f = api(CountingReader::default())?;
    let response = f.handle(get("/metrics", &[], Some("r"))).await;
    assert_eq!(response.status, 200, "{}", response.body);
    assert_eq!(
        response.header("content-type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    for line in [
        "tally_events_accepted_total{source=\"web\"} 12",
        "tally_events_processed_total 10",
        "tally_events_duplicate_total 2",
        "tally_events_dead_lettered_total 0",
        "tally_queue_depth{queue=\"work\"} 3",
    ] {
        assert!(
            response.body.lines().any(|l| l == line),
            "{line}: {}",
            response.body
        );
    }
    // Requests are timed under their route's name, unmatched ones under one label.
    assert_eq!(
        f.handle(get("/v1/nothing", &[], Some("r"))).await.status,
        404
    );
    let again = f.handle(get("/metrics", &[], Some("r"))).await.body;
    for line in [
        "tally_http_request_duration_seconds_count{route=\"GET /metrics\"} 1",
        "tally_http_request_duration_seconds_bucket{route=\"GET /metrics\",le=\"+Inf\"} 1",
        "tally_http_request_duration_seconds_count{route=\"unmatched\"} 1",
    ] {
        assert!(again.lines().any(|l| l == line), "{line}: {again}");
    }
    for (key, status) in [(None, 401), (Some("i"), 403)] {
        assert_eq!(f.handle(get("/metrics", &[], key)).await.status, status);
    }

    let (status, body) = status_and_body(&f, get("/health/ready", &[], None)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["checks"]["work queue"], "ok");

    f.ops.queue_down.store(true, Ordering::SeqCst);
    // The answer is reused until it expires, then the failure shows.
    let (status, _) = status_and_body(&f, get("/health/ready", &[], None)).await;
    assert_eq!(status, 200);
    tokio::time::sleep(Duration::from_millis(60)).await;
    let (status, body) = status_and_body(&f, get("/health/ready", &[], None)).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"]["message"], "work queue is unavailable");
    assert_eq!(body["error"]["details"][0]["path"], "work queue");
    assert!(!body.to_string().contains("internals"), "{body}");
    let (status, body) = status_and_body(&f, get("/metrics", &[], Some("r"))).await;
    assert_eq!(
        (status, body["error"]["message"].as_str()),
        (503, Some("work queue is unavailable"))
    );
    Ok(())
}

fn get(path: &str, query: &[(&str, &str)], key: Option<&str>) -> HttpRequest {
    let mut request = HttpRequest::new("GET", path).with_query(query);
    if let Some(key) = key {
        request = request.with_bearer(key);
    }
    request.request_id = "req-1".into();
    request
}

const DAY: [(&str, &str); 3] = [
    ("window", "day"),
    ("start", "2026-11-01T00:00:00Z"),
    ("end", "2026-11-03T00:00:00Z"),
];

const REPORT: [(&str, &str); 2] = [("from", "2026-11-01"), ("to", "2026-11-02")];

/// In [`with`]'s extras, removes the parameter.
const ABSENT: &str = "<absent>";

/// `base` with `extra` set (or removed, when [`ABSENT`]).
fn with<'a>(base: &[(&'a str, &'a str)], extra: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
    let mut query: Vec<(&str, &str)> = base
        .iter()
        .filter(|(k, _)| !extra.iter().any(|(e, _)| e == k))
        .copied()
        .collect();
    query.extend(extra.iter().copied().filter(|(_, v)| *v != ABSENT));
    query
}

async fn status_and_body(api: &Api, request: HttpRequest) -> (u16, Value) {
    let response = api.handle(request).await;
    let body = serde_json::from_str(&response.body).unwrap_or(Value::Null);
    (response.status, body)
}

#[tokio::test]
async fn scopes_health_and_routing() -> Result<(), String> {
    let api = api(CountingReader::default())?;
    for (key, status) in [
        (None, 401),
        (Some("nope"), 401),
        (Some("i"), 403),
        (Some("r"), 200),
        (Some("a"), 200),
    ] {
        let (got, body) = status_and_body(&api, get("/v1/aggregations", &DAY, key)).await;
        assert_eq!(got, status, "{key:?}: {body}");
    }
    for path in ["/health", "/health/live", "/health/"] {
        let (status, body) = status_and_body(&api, get(path, &[], None)).await;
        assert_eq!(
            (status, body["status"].as_str()),
            (200, Some("ok")),
            "{path}"
        );
    }
    let mut post = get("/v1/aggregations", &DAY, Some("r"));
    post.method = "POST".into();
    let response = api.handle(post).await;
    assert_eq!(
        (response.status, response.header("allow")),
        (405, Some("GET"))
    );
    let (status, body) = status_and_body(&api, get("/v1/nothing", &[], Some("r"))).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (404, Some("NOT_FOUND"))
    );
    // Every answer carries the correlation id.
    let response = api.handle(get("/health", &[], None)).await;
    assert!(response
        .header("x-correlation-id")
        .is_some_and(|id| !id.is_empty()));
    Ok(())
}

#[tokio::test]
async fn every_bad_parameter_is_a_400_naming_it_and_reads_nothing() -> Result<(), String> {
    let reader = CountingReader::default();
    let api = api(reader)?;
    let top = [
        ("metric", "count"),
        ("dimension", "campaignId"),
        ("start", "2026-11-01T00:00:00Z"),
        ("end", "2026-11-03T00:00:00Z"),
    ];
    // (route, parameters, the fields the 400 must name)
    type Case<'a> = (&'a str, Vec<(&'a str, &'a str)>, &'a [&'a str]);
    let cases: Vec<Case> = vec![
        (
            "/v1/aggregations",
            with(&DAY, &[("window", ABSENT)]),
            &["window"],
        ),
        (
            "/v1/aggregations",
            with(&DAY, &[("window", "week")]),
            &["window"],
        ),
        (
            "/v1/aggregations",
            with(&DAY, &[("start", ABSENT)]),
            &["start"],
        ),
        (
            "/v1/aggregations",
            with(&DAY, &[("start", "yesterday")]),
            &["start"],
        ),
        // The ends of what the clock holds (they once overflowed the hour alignment).
        (
            "/v1/aggregations",
            with(
                &DAY,
                &[
                    ("window", "hour"),
                    ("start", "8210298412000000"),
                    ("end", "8210298412799999"),
                ],
            ),
            &["start", "end"],
        ),
        (
            "/v1/aggregations",
            with(&DAY, &[("start", "-8210266876800000")]),
            &["start"],
        ),
        (
            "/v1/reports/events",
            vec![("from", "9999-12-31"), ("to", "+262143-12-31T23:59:59Z")],
            &["to"],
        ),
        (
            "/v1/reports/events",
            vec![("from", "9999-12-31"), ("to", "9999-12-31")],
            &["to"],
        ),
        (
            "/v1/aggregations",
            with(&DAY, &[("start", "2026-11-01")]),
            &["start"],
        ),
        (
            "/v1/aggregations",
            with(&DAY, &[("end", "2026-11-01T00:00:00Z")]),
            &["end"],
        ),
        (
            "/v1/aggregations",
            with(&DAY, &[("startTime", "2026-11-01T00:00:00Z")]),
            &["start"],
        ),
        (
            "/v1/aggregations",
            with(&DAY, &[("window", "hour"), ("end", "2026-12-03T00:00:00Z")]),
            &["end"],
        ),
        (
            "/v1/aggregations",
            with(&DAY, &[("end", "2027-12-07T00:00:00Z")]),
            &["end"],
        ),
        (
            "/v1/aggregations",
            with(&DAY, &[("funnelStage", "deep")]),
            &["funnelStage"],
        ),
        (
            "/v1/aggregations",
            with(&DAY, &[("campaignID", "c1")]),
            &["campaignID"],
        ),
        (
            "/v1/aggregations",
            with(&DAY, &[("campaignId", "")]),
            &["campaignId"],
        ),
        (
            "/v1/aggregations",
            with(&DAY, &[("window", "fortnight"), ("start", "x")]),
            &["window", "start"],
        ),
        (
            "/v1/aggregations/top",
            with(&top, &[("metric", ABSENT)]),
            &["metric"],
        ),
        (
            "/v1/aggregations/top",
            with(&top, &[("metric", "avg")]),
            &["metric"],
        ),
        (
            "/v1/aggregations/top",
            with(&top, &[("dimension", "country")]),
            &["dimension"],
        ),
        (
            "/v1/aggregations/top",
            with(&top, &[("limit", "0")]),
            &["limit"],
        ),
        (
            "/v1/aggregations/top",
            with(&top, &[("limit", "101")]),
            &["limit"],
        ),
        (
            "/v1/aggregations/top",
            with(&top, &[("limit", "ten")]),
            &["limit"],
        ),
        (
            "/v1/aggregations/top",
            with(&top, &[("currency", "XYZ")]),
            &["currency"],
        ),
        (
            "/v1/aggregations/top",
            with(&top, &[("end", "2028-01-01T00:00:00Z")]),
            &["end"],
        ),
        (
            "/v1/aggregations/top",
            with(&top, &[("window", "day")]),
            &["window"],
        ),
        (
            "/v1/reports/events",
            with(&REPORT, &[("from", ABSENT)]),
            &["from"],
        ),
        (
            "/v1/reports/events",
            with(&REPORT, &[("to", "2026-13-01")]),
            &["to"],
        ),
        (
            "/v1/reports/events",
            with(&REPORT, &[("to", "2026-10-31")]),
            &["to"],
        ),
        (
            "/v1/reports/events",
            with(&REPORT, &[("to", "2027-12-06")]),
            &["to"],
        ),
        (
            "/v1/reports/events",
            with(&REPORT, &[("funnelStage", "low")]),
            &["funnelStage"],
        ),
        (
            "/v1/reports/events",
            with(&REPORT, &[("campaignId", "c1")]),
            &["campaignId"],
        ),
        (
            "/v1/reports/revenue",
            with(&REPORT, &[("currency", "usd1")]),
            &["currency"],
        ),
        (
            "/v1/reports/revenue",
            with(&REPORT, &[("source", "")]),
            &["source"],
        ),
        (
            "/v1/reports/revenue",
            with(&REPORT, &[("type", "PURCHASE")]),
            &["type"],
        ),
        (
            "/v1/reports/demographics",
            with(&REPORT, &[("from", "yesterday"), ("to", ABSENT)]),
            &["from", "to"],
        ),
        (
            "/v1/reports/demographics",
            with(&REPORT, &[("funnelStage", "top")]),
            &["funnelStage"],
        ),
    ];
    for (path, query, fields) in &cases {
        let (status, body) = status_and_body(&api, get(path, query, Some("r"))).await;
        assert_eq!(status, 400, "{path} {query:?}: {body}");
        assert_eq!(body["error"]["code"], "VALIDATION_FAILED", "{query:?}");
        assert_eq!(body["requestId"], "req-1");
        let named: Vec<&str> = body["error"]["details"]
            .as_array()
            .map(|d| d.iter().filter_map(|e| e["path"].as_str()).collect())
            .unwrap_or_default();
        for field in *fields {
            assert!(
                named.contains(field),
                "{query:?} should name {field}: {body}"
            );
        }
    }
    // Filters the aggregates cannot answer together.
    for extra in [
        vec![("campaignId", "c1"), ("regionId", "r1")],
        vec![("campaignId", "c1"), ("source", "web")],
        vec![("regionId", "r1"), ("funnelStage", "top")],
        vec![
            ("campaignId", "c1"),
            ("source", "web"),
            ("funnelStage", "top"),
        ],
    ] {
        let (status, body) = status_and_body(
            &api,
            get("/v1/aggregations", &with(&DAY, &extra), Some("r")),
        )
        .await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (400, Some("UNSUPPORTED_FILTER")),
            "{extra:?}"
        );
    }
    // A hostile parameter name is not echoed.
    let (_, body) = status_and_body(
        &api,
        get(
            "/v1/aggregations",
            &with(&DAY, &[("<script>", "1")]),
            Some("r"),
        ),
    )
    .await;
    assert!(!body.to_string().contains("<script>"), "{body}");
    assert_eq!(api.aggregates.counts(), (0, 0));

    // The limits themselves are accepted: 31 days by the hour (each day by its hours), 400 by
    // the day (each day whole).
    for query in [
        with(&DAY, &[("window", "hour"), ("end", "2026-12-02T00:00:00Z")]),
        with(&DAY, &[("end", "2027-12-06T00:00:00Z")]),
    ] {
        let (status, body) =
            status_and_body(&api, get("/v1/aggregations", &query, Some("r"))).await;
        assert_eq!(status, 200, "{query:?}: {body}");
    }
    assert_eq!(api.aggregates.counts(), (31 + 400, 400));
    Ok(())
}

#[tokio::test]
async fn whole_days_are_read_whole_and_only_the_edges_by_the_hour() -> Result<(), String> {
    let api = api(CountingReader::default())?;
    // From mid-day to mid-day: 2 edge days by the hour, the 29 days between whole.
    let top = [
        ("metric", "count"),
        ("dimension", "campaignId"),
        ("start", "2026-10-01T13:20:00Z"),
        ("end", "2026-10-31T09:00:00Z"),
    ];
    for path in ["/v1/aggregations/top", "/v1/aggregations/top-performing"] {
        let before = api.aggregates.counts();
        let (status, body) = status_and_body(&api, get(path, &top, Some("r"))).await;
        assert_eq!(status, 200, "{body}");
        let after = api.aggregates.counts();
        assert_eq!((after.0 - before.0, after.1 - before.1), (31, 29), "{path}");
    }
    // A range of whole days only: every day whole, by either window=day or a report.
    let before = api.aggregates.counts();
    let (status, _) = status_and_body(
        &api,
        get(
            "/v1/reports/events",
            &[("from", "2026-10-01"), ("to", "2026-10-30")],
            Some("r"),
        ),
    )
    .await;
    assert_eq!(status, 200);
    let after = api.aggregates.counts();
    assert_eq!((after.0 - before.0, after.1 - before.1), (30, 30));
    Ok(())
}

#[tokio::test]
async fn report_ranges_take_dates_with_an_inclusive_to_and_read_each_day_once() -> Result<(), String>
{
    let api = api(CountingReader::default())?;
    for (from, to, echoed, days) in [
        // A date `to` includes that day.
        (
            "2026-11-01",
            "2026-11-02",
            ("2026-11-01T00:00:00.000Z", "2026-11-03T00:00:00.000Z"),
            2,
        ),
        (
            "2026-11-01",
            "2026-11-01",
            ("2026-11-01T00:00:00.000Z", "2026-11-02T00:00:00.000Z"),
            1,
        ),
        // Instants (any offset, or epoch milliseconds) widen to whole hours; `to` is exclusive.
        (
            "2026-11-01T10:30:00+02:00",
            "1793565000000",
            ("2026-11-01T08:00:00.000Z", "2026-11-01T21:00:00.000Z"),
            1,
        ),
        // 400 days is the most a report spans.
        (
            "2026-11-01",
            "2027-12-05",
            ("2026-11-01T00:00:00.000Z", "2027-12-06T00:00:00.000Z"),
            400,
        ),
    ] {
        for path in [
            "/v1/reports/events",
            "/v1/reports/revenue",
            "/v1/reports/demographics",
        ] {
            let before = api.aggregates.reads.load(Ordering::SeqCst);
            let (status, body) =
                status_and_body(&api, get(path, &[("from", from), ("to", to)], Some("r"))).await;
            assert_eq!(status, 200, "{path} {from} {to}: {body}");
            assert_eq!(
                (body["from"].as_str(), body["to"].as_str()),
                (Some(echoed.0), Some(echoed.1))
            );
            let reads = api.aggregates.reads.load(Ordering::SeqCst) - before;
            assert_eq!(reads, days, "{path} {from} {to}");
        }
    }
    // Nothing stored: zero everywhere, every band listed.
    let (_, body) =
        status_and_body(&api, get("/v1/reports/demographics", &REPORT, Some("r"))).await;
    assert_eq!(body["events"], 0);
    assert_eq!(body["age"].as_object().map(|a| a.len()), Some(8), "{body}");
    assert_eq!(
        body["followers"].as_object().map(|a| a.len()),
        Some(5),
        "{body}"
    );
    let (_, body) = status_and_body(&api, get("/v1/reports/revenue", &REPORT, Some("r"))).await;
    assert_eq!(body["total"], serde_json::json!({}));
    assert_eq!(body["byCampaign"], serde_json::json!([]));
    let (status, _) = status_and_body(&api, get("/v1/reports/events", &REPORT, Some("i"))).await;
    assert_eq!(status, 403, "an ingest key cannot read reports");
    Ok(())
}

#[tokio::test]
async fn a_store_that_does_not_answer_is_a_503_without_its_error() -> Result<(), String> {
    let api = api(CountingReader {
        down: true,
        ..Default::default()
    })?;
    let (status, body) = status_and_body(&api, get("/v1/aggregations", &DAY, Some("r"))).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"]["code"], "SERVICE_UNAVAILABLE");
    assert!(!body.to_string().contains("secret internals"), "{body}");
    Ok(())
}

fn put(event_type: &str, body: &str, key: &str) -> HttpRequest {
    HttpRequest::new("PUT", &format!("/v1/rules/{event_type}"))
        .with_bearer(key)
        .with_json(body)
}

#[tokio::test]
async fn rules_read_with_defaults_and_change_with_admin_scope_only() -> Result<(), String> {
    let api = api(CountingReader::default())?;
    let (status, body) = status_and_body(&api, get("/v1/rules", &[], Some("r"))).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["score"], serde_json::json!({"min": 0, "max": 1000}));
    assert_eq!(
        body["decay"],
        serde_json::json!({"afterDays": 14, "percentPerDay": 2})
    );
    let demo = body["rules"]
        .as_array()
        .and_then(|r| r.iter().find(|r| r["eventType"] == "DEMO_REQUEST"))
        .cloned();
    assert_eq!(
        demo,
        Some(
            serde_json::json!({"eventType": "DEMO_REQUEST", "points": 50, "active": true, "maxPerDay": null})
        )
    );

    let change = r#"{"points": 7, "maxPerDay": 3}"#;
    for (key, status) in [("r", 403), ("i", 403), ("a", 200)] {
        let (got, body) = status_and_body(&api, put("PAGE_VIEW", change, key)).await;
        assert_eq!(got, status, "{key}: {body}");
    }
    let (_, body) = status_and_body(
        &api,
        put(
            "ad.click",
            r#"{"points": -3, "active": false, "eventType": "ad.click"}"#,
            "a",
        ),
    )
    .await;
    let (_, read) = status_and_body(&api, get("/v1/rules", &[], Some("r"))).await;
    assert_eq!(
        body,
        serde_json::json!({"eventType": "ad.click", "points": -3, "active": false, "maxPerDay": null,
                           "version": read["version"]})
    );
    let (_, body) = status_and_body(&api, get("/v1/rules", &[], Some("a"))).await;
    let rules = body["rules"].as_array().cloned().unwrap_or_default();
    let find = |ty: &str| rules.iter().find(|r| r["eventType"] == ty).cloned();
    assert_eq!(
        find("PAGE_VIEW"),
        Some(
            serde_json::json!({"eventType": "PAGE_VIEW", "points": 7, "active": true, "maxPerDay": 3})
        )
    );
    assert_eq!(
        find("ad.click").map(|r| r["active"].clone()),
        Some(Value::Bool(false))
    );

    // Bad bodies: each names its field; nothing is stored.
    for (ty, body_text, field) in [
        ("PAGE_VIEW", r#"{"active": true}"#, "/points"),
        ("PAGE_VIEW", r#"{"points": "5"}"#, "/points"),
        ("PAGE_VIEW", r#"{"points": 2000000}"#, "/points"),
        (
            "PAGE_VIEW",
            r#"{"points": 5, "maxPerDay": 0}"#,
            "/maxPerDay",
        ),
        (
            "PAGE_VIEW",
            r#"{"points": 5, "maxPerDay": -1}"#,
            "/maxPerDay",
        ),
        ("PAGE_VIEW", r#"{"points": 5, "active": "yes"}"#, "/active"),
        (
            "PAGE_VIEW",
            r#"{"points": 5, "eventType": "EMAIL_OPEN"}"#,
            "/eventType",
        ),
        ("PAGE_VIEW", r#"{"points": 5, "bonus": 1}"#, "/bonus"),
        ("9lives", r#"{"points": 5}"#, "/eventType"),
        ("PAGE_VIEW", "[5]", ""),
    ] {
        let (status, body) = status_and_body(&api, put(ty, body_text, "a")).await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (400, Some("VALIDATION_FAILED")),
            "{body_text}: {body}"
        );
        let named = body["error"]["details"]
            .as_array()
            .is_some_and(|d| d.iter().any(|e| e["path"] == field));
        assert!(named, "{body_text} should name {field:?}: {body}");
    }
    let (status, body) = status_and_body(&api, put("PAGE_VIEW", "{", "a")).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (400, Some("INVALID_JSON"))
    );
    let mut text = put("PAGE_VIEW", r#"{"points": 1}"#, "a");
    text.headers
        .insert("content-type".into(), "text/plain".into());
    assert_eq!(api.handle(text).await.status, 415);
    let (_, body) = status_and_body(&api, get("/v1/rules", &[], Some("r"))).await;
    let page_view = body["rules"]
        .as_array()
        .and_then(|r| r.iter().find(|r| r["eventType"] == "PAGE_VIEW").cloned());
    assert_eq!(page_view.map(|r| r["points"].clone()), Some(Value::from(7)));
    // The routes' methods.
    let mut delete = get("/v1/rules/PAGE_VIEW", &[], Some("a"));
    delete.method = "DELETE".into();
    let response = api.handle(delete).await;
    assert_eq!(
        (response.status, response.header("allow")),
        (405, Some("PUT"))
    );
    Ok(())
}

#[tokio::test]
async fn a_rule_put_with_the_version_read_refuses_to_overwrite_a_newer_change() -> Result<(), String>
{
    let api = api(CountingReader::default())?;
    let (_, read) = status_and_body(&api, get("/v1/rules", &[], Some("r"))).await;
    let version = read["version"]
        .as_u64()
        .ok_or("GET /v1/rules has a version")?;
    let (_, settings) = status_and_body(&api, get("/v1/scoring", &[], Some("r"))).await;
    assert_eq!(
        settings["version"], version,
        "rules and settings share one version"
    );

    // Someone else's change lands first ...
    let theirs = format!(r#"{{"points": 8, "version": {version}}}"#);
    let (status, body) = status_and_body(&api, put("PAGE_VIEW", &theirs, "a")).await;
    assert_eq!(status, 200, "{body}");
    let newer = body["version"]
        .as_u64()
        .ok_or("the answer carries the new version")?;
    assert!(newer > version, "{body}");
    // ... so an edit based on the old version is refused and changes nothing.
    let mine = format!(r#"{{"points": 3, "version": {version}}}"#);
    let (status, body) = status_and_body(&api, put("EMAIL_OPEN", &mine, "a")).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (409, Some("CONFLICT")),
        "{body}"
    );
    let (_, after) = status_and_body(&api, get("/v1/rules", &[], Some("r"))).await;
    let points = |ty: &str| {
        after["rules"]
            .as_array()
            .and_then(|r| r.iter().find(|r| r["eventType"] == ty))
            .map(|r| r["points"].clone())
    };
    assert_eq!(points("EMAIL_OPEN"), Some(Value::from(10)));
    assert_eq!(points("PAGE_VIEW"), Some(Value::from(8)));
    assert_eq!(after["version"], newer);
    // Based on the version now stored, it applies.
    let mine = format!(r#"{{"points": 3, "version": {newer}}}"#);
    let (status, body) = status_and_body(&api, put("EMAIL_OPEN", &mine, "a")).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = status_and_body(
        &api,
        put("EMAIL_OPEN", r#"{"points": 3, "version": -1}"#, "a"),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    Ok(())
}

mod scoring_settings {
    use serde_json::json;

    use super::*;

    fn put_scoring(body: &Value, key: &str) -> HttpRequest {
        HttpRequest::new("PUT", "/v1/scoring")
            .with_bearer(key)
            .with_json(body.to_string())
    }

    #[tokio::test]
    async fn settings_read_change_and_refuse_a_stale_version() -> Result<(), String> {
        let f = api(CountingReader::default())?;
        let (status, read) = status_and_body(&f, get("/v1/scoring", &[], Some("r"))).await;
        assert_eq!(status, 200, "{read}");
        assert_eq!(read["score"], json!({"min": 0, "max": 1000}));
        assert_eq!(read["decay"], json!({"afterDays": 14, "percentPerDay": 2}));
        assert_eq!(
            read["stages"],
            json!([{"name": "MQL", "minScore": 100}, {"name": "SQL", "minScore": 300}])
        );
        let version = read["version"].as_u64().ok_or("version")?;

        let mut change = read.clone();
        change["stages"] = json!([
            {"name": "MQL", "minScore": 80},
            {"name": "SQL", "minScore": 250},
            {"name": "Customer", "minScore": 600}
        ]);
        change["decay"] = json!({"afterDays": 7, "percentPerDay": 1.5});
        let (status, _) = status_and_body(&f, put_scoring(&change, "r")).await;
        assert_eq!(status, 403, "a read key may not change them");
        let (status, saved) = status_and_body(&f, put_scoring(&change, "a")).await;
        assert_eq!(status, 200, "{saved}");
        assert_eq!(saved["version"], json!(version + 1));
        assert_eq!(
            saved["stages"][2],
            json!({"name": "Customer", "minScore": 600})
        );
        let (_, again) = status_and_body(&f, get("/v1/scoring", &[], Some("r"))).await;
        assert_eq!(again, saved);

        // Someone else's write (this same body again, based on the old version) is a 409.
        let (status, body) = status_and_body(&f, put_scoring(&change, "a")).await;
        assert_eq!(status, 409, "{body}");
        assert_eq!(body["error"]["code"], "CONFLICT");
        // So is one based on a version read before a rule changed.
        let mut current = again.clone();
        let (status, _) = status_and_body(&f, put("PAGE_VIEW", r#"{"points": 6}"#, "a")).await;
        assert_eq!(status, 200);
        current["score"]["max"] = json!(900);
        let (status, _) = status_and_body(&f, put_scoring(&current, "a")).await;
        assert_eq!(status, 409);
        // The rules route still shows rules, bounds and decay only.
        let (_, rules) = status_and_body(&f, get("/v1/rules", &[], Some("r"))).await;
        assert!(rules.get("stages").is_none(), "{rules}");
        assert_eq!(rules["decay"]["afterDays"], 7);
        Ok(())
    }

    #[tokio::test]
    async fn bad_settings_are_a_400_naming_each_field() -> Result<(), String> {
        let f = api(CountingReader::default())?;
        let (_, read) = status_and_body(&f, get("/v1/scoring", &[], Some("r"))).await;
        let cases = [
            (
                json!([{"name": "SQL", "minScore": 300}, {"name": "MQL", "minScore": 100}]),
                "/stages/1/minScore",
            ),
            (
                json!([{"name": "MQL", "minScore": 100}, {"name": "MQL", "minScore": 300}]),
                "/stages/1/name",
            ),
            (
                json!([{"name": "9lives", "minScore": 100}]),
                "/stages/0/name",
            ),
            (
                json!([{"name": "Whale", "minScore": 5000}]),
                "/stages/0/minScore",
            ),
        ];
        for (stages, path) in cases {
            let mut body = read.clone();
            body["stages"] = stages;
            let (status, answer) = status_and_body(&f, put_scoring(&body, "a")).await;
            assert_eq!(status, 400, "{answer}");
            assert_eq!(answer["error"]["details"][0]["path"], path, "{answer}");
        }
        let mut too_many = read.clone();
        too_many["stages"] = Value::Array(
            (0..11)
                .map(|i| json!({"name": format!("S{i}"), "minScore": i * 10}))
                .collect(),
        );
        let (status, answer) = status_and_body(&f, put_scoring(&too_many, "a")).await;
        assert_eq!(
            (status, answer["error"]["details"][0]["path"].clone()),
            (400, json!("/stages"))
        );
        let mut inverted = read.clone();
        inverted["score"] = json!({"min": 10, "max": 5});
        inverted["stages"] = json!([]);
        let (status, answer) = status_and_body(&f, put_scoring(&inverted, "a")).await;
        assert_eq!(
            (status, answer["error"]["details"][0]["path"].clone()),
            (400, json!("/score/min"))
        );
        for bad in [json!({"score": read["score"]}), json!([1]), {
            let mut extra = read.clone();
            extra["surprise"] = json!(1);
            extra
        }] {
            let (status, answer) = status_and_body(&f, put_scoring(&bad, "a")).await;
            assert_eq!(status, 400, "{answer}");
            assert_eq!(answer["error"]["code"], "VALIDATION_FAILED");
        }
        let (_, unchanged) = status_and_body(&f, get("/v1/scoring", &[], Some("r"))).await;
        assert_eq!(unchanged, read, "nothing was written");
        let mut delete = get("/v1/scoring", &[], Some("a"));
        delete.method = "DELETE".into();
        let response = f.handle(delete).await;
        assert_eq!(
            (response.status, response.header("allow")),
            (405, Some("GET, PUT"))
        );
        Ok(())
    }
}

mod leads {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine;
    use chrono::{DateTime, Utc};
    use serde_json::json;

    use super::*;
    use crate::event::LeadProfile;
    use crate::scoring::{LeadScore, LeadStore, RuleStore, ScoreRules, ScoredEvent};

    /// Sets each lead's stored state, and with it its leaderboard entry.
    async fn set_scores(f: &Fixture, scores: &[(&str, i64)]) -> Result<(), String> {
        let now = Utc::now();
        for (id, score) in scores {
            let state = LeadScore {
                score: *score,
                events: 1,
                last_activity_at: Some(now),
                profile: LeadProfile {
                    email: Some(format!("{id}@example.com")),
                    ..LeadProfile::default()
                },
                ..LeadScore::default()
            };
            let version = f.leads.lead(id).map_or(0, |r| r.version);
            f.leads
                .put_lead(id, &state, version)
                .await
                .map_err(|e| e.to_string())?;
        }
        Ok(())
    }

    async fn page(f: &Fixture, query: &[(&str, &str)]) -> (u16, Value) {
        status_and_body(f, get("/v1/leads", query, Some("r"))).await
    }

    fn rows(body: &Value) -> Vec<(u64, String, i64)> {
        body["leads"]
            .as_array()
            .map(|rows| {
                rows.iter()
                    .map(|r| {
                        (
                            r["rank"].as_u64().unwrap_or(0),
                            r["leadId"].as_str().unwrap_or("").to_owned(),
                            r["score"].as_i64().unwrap_or(-1),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    async fn paginate(
        f: &Fixture,
        limit: &str,
        between: &[(&str, i64)],
    ) -> Result<Vec<(u64, String, i64)>, String> {
        let (status, first) = page(f, &[("limit", limit)]).await;
        assert_eq!(status, 200, "{first}");
        let mut seen = rows(&first);
        let mut cursor = first["nextCursor"].as_str().map(str::to_owned);
        set_scores(f, between).await?;
        while let Some(c) = cursor {
            let (status, body) = page(f, &[("limit", limit), ("cursor", &c)]).await;
            assert_eq!(status, 200, "{body}");
            seen.extend(rows(&body));
            cursor = body["nextCursor"].as_str().map(str::to_owned);
            assert_eq!(body["asOf"], first["asOf"]);
        }
        Ok(seen)
    }

    #[tokio::test]
    async fn pages_follow_the_live_board_by_position() -> Result<(), String> {
        let f = api(CountingReader::default())?;
        // Twenty leads, scores tied in pairs.
        let ids: Vec<String> = (0..20).map(|i| format!("l{i:02}")).collect();
        let scores: Vec<(&str, i64)> = ids
            .iter()
            .enumerate()
            .map(|(i, id)| (id.as_str(), (i as i64 / 2) * 10))
            .collect();
        set_scores(&f, &scores).await?;
        let mut order: Vec<(&str, i64)> = scores.clone();
        order.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));

        let (_, first) = page(&f, &[("limit", "6")]).await;
        assert_eq!(first["leads"][0]["email"], "l18@example.com");
        assert_eq!(first["leads"][0]["eventCount"], 1);
        // Unchanged, the pages list every lead once, in order, ties by id.
        let seen = paginate(&f, "6", &[]).await?;
        let expected: Vec<(u64, String, i64)> = order
            .iter()
            .enumerate()
            .map(|(i, (id, score))| (i as u64 + 1, (*id).to_owned(), *score))
            .collect();
        assert_eq!(seen, expected);

        // Meanwhile a lead not shown yet jumps to the top and a new lead appears between the
        // pages: the next pages continue after the last lead shown, by its place in the live
        // order, so every lead that kept its score is still shown exactly once.
        let seen = paginate(&f, "6", &[("l01", 1000), ("new", 45)]).await?;
        let ids: Vec<&str> = seen.iter().map(|(_, id, _)| id.as_str()).collect();
        for (id, _) in order.iter().filter(|(id, _)| *id != "l01") {
            assert_eq!(ids.iter().filter(|s| *s == id).count(), 1, "{id}: {ids:?}");
        }
        assert!(
            !ids.contains(&"l01"),
            "it moved above the pages already read"
        );
        assert!(ids.contains(&"new"), "it sorts into a later page");

        // A new pagination sees the changes.
        let (_, fresh) = page(&f, &[("limit", "2")]).await;
        assert_eq!(
            rows(&fresh),
            [(1, "l01".to_owned(), 1000), (2, "l18".to_owned(), 90)]
        );
        // The end has no cursor.
        let (_, all) = page(&f, &[("limit", "100")]).await;
        assert_eq!(rows(&all).len(), 21);
        assert!(all.get("nextCursor").is_none(), "{all}");
        Ok(())
    }

    #[tokio::test]
    async fn a_search_by_email_finds_every_lead_with_that_address_whatever_its_id(
    ) -> Result<(), String> {
        let f = api(CountingReader::default())?;
        set_scores(&f, &[("a", 10), ("b", 30)]).await?;
        // A lead with its own id (a CRM's) and the email of another, in other letter cases.
        let state = LeadScore {
            score: 20,
            events: 2,
            last_activity_at: Some(Utc::now()),
            profile: LeadProfile {
                email: Some(" A@Example.com".into()),
                name: Some("Ada".into()),
                ..LeadProfile::default()
            },
            ..LeadScore::default()
        };
        f.leads
            .put_lead("crm-7", &state, 0)
            .await
            .map_err(|e| e.to_string())?;
        // A lead posted without its own id is named after its address: found by that id.
        let mut derived = LeadScore {
            score: 5,
            ..state.clone()
        };
        derived.profile.email = Some("c@example.com".into());
        f.leads
            .put_lead("email:c@example.com", &derived, 0)
            .await
            .map_err(|e| e.to_string())?;
        let (_, body) = page(&f, &[("email", "C@example.com")]).await;
        assert_eq!(body["leads"][0]["leadId"], "email:c@example.com", "{body}");
        assert_eq!(body["leads"].as_array().map(Vec::len), Some(1));
        let (status, body) = page(&f, &[("email", "a@EXAMPLE.com")]).await;
        assert_eq!(status, 200, "{body}");
        let found: Vec<(String, i64)> = rows(&body)
            .into_iter()
            .map(|(_, id, score)| (id, score))
            .collect();
        assert_eq!(found, [("crm-7".to_owned(), 20), ("a".to_owned(), 10)]);
        assert_eq!(body["leads"][0]["name"], "Ada");
        assert_eq!(body["leads"][0]["eventCount"], 2);
        assert!(body["leads"][0].get("rank").is_none(), "{body}");
        let (_, none) = page(&f, &[("email", "nobody@example.com")]).await;
        assert_eq!(none["leads"], json!([]));
        for bad in [
            vec![("email", "not-an-address")],
            vec![("email", "a@example.com"), ("stage", "MQL")],
            vec![("email", "a@example.com"), ("limit", "5")],
        ] {
            let (status, body) = page(&f, &bad).await;
            assert_eq!(status, 400, "{bad:?}: {body}");
            assert_eq!(body["error"]["details"][0]["path"], "email", "{body}");
        }
        let long = format!("{}@example.com", "x".repeat(300));
        let (status, _) = page(&f, &[("email", &long)]).await;
        assert_eq!(status, 400);
        Ok(())
    }

    fn cursor(as_of: DateTime<Utc>) -> String {
        URL_SAFE_NO_PAD
            .encode(json!({"t": as_of.timestamp_millis(), "s": 10, "l": "x"}).to_string())
    }

    #[tokio::test]
    async fn bad_and_expired_cursors_are_a_400_naming_cursor() -> Result<(), String> {
        let f = api(CountingReader::default())?;
        set_scores(&f, &[("a", 10)]).await?;
        let now = Utc::now();
        let (status, _) = page(&f, &[("cursor", &cursor(now))]).await;
        assert_eq!(status, 200, "a fresh cursor is taken");
        for bad in [
            "not a cursor".to_owned(),
            URL_SAFE_NO_PAD.encode("{}"),
            cursor(now - chrono::Duration::hours(2)),
            cursor(now + chrono::Duration::minutes(1)),
            // Forged times at the ends of i64 (once an overflow in the age check).
            URL_SAFE_NO_PAD
                .encode(serde_json::json!({"t": i64::MIN, "s": 0, "l": "a"}).to_string()),
            URL_SAFE_NO_PAD
                .encode(serde_json::json!({"t": i64::MAX, "s": 0, "l": "a"}).to_string()),
        ] {
            let (status, body) = page(&f, &[("cursor", &bad)]).await;
            assert_eq!(status, 400, "{bad}: {body}");
            assert_eq!(body["error"]["details"][0]["path"], "cursor", "{body}");
        }
        for limit in ["0", "101", "x"] {
            let (status, body) = page(&f, &[("limit", limit)]).await;
            assert_eq!(status, 400, "{limit}: {body}");
            assert_eq!(body["error"]["details"][0]["path"], "limit");
        }
        let (status, _) = status_and_body(&f, get("/v1/leads", &[], Some("i"))).await;
        assert_eq!(status, 403);
        Ok(())
    }

    #[tokio::test]
    async fn one_lead_is_shown_with_the_events_not_yet_scored() -> Result<(), String> {
        let f = api(CountingReader::default())?;
        let rules = ScoreRules::defaults();
        let t0 = Utc::now() - chrono::Duration::hours(1);
        let id = "email:a@x.io";
        let scored = [
            ScoredEvent::new("e1", "PAGE_VIEW", t0),
            ScoredEvent::new("e2", "PURCHASE", t0 + chrono::Duration::minutes(1)),
        ];
        let (state, _) = LeadScore::fold(&rules, scored.to_vec());
        f.leads
            .put_lead(id, &state, 0)
            .await
            .map_err(|e| e.to_string())?;
        for e in scored {
            f.history.store(id, e);
        }
        // Processed, its stream batch not scored yet.
        f.history.store(
            id,
            ScoredEvent::new("e3", "DEMO_REQUEST", t0 + chrono::Duration::minutes(2)),
        );
        // The id as a client sends it in a path.
        let (status, body) =
            status_and_body(&f, get("/v1/leads/email%3Aa%40x.io", &[], Some("r"))).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["leadId"], id);
        assert_eq!(body["score"], 155);
        // 155 reaches MQL (100) and not SQL (300), the default stages.
        assert_eq!(body["stage"], "MQL");
        assert_eq!(body["eventCount"], 3);
        assert_eq!(
            body["eventCounts"],
            json!({"DEMO_REQUEST": 1, "PAGE_VIEW": 1, "PURCHASE": 1})
        );
        let recent: Vec<(&str, i64)> = body["recentEvents"]
            .as_array()
            .map(|r| {
                r.iter()
                    .map(|e| {
                        (
                            e["eventId"].as_str().unwrap_or(""),
                            e["points"].as_i64().unwrap_or(0),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        assert_eq!(recent, [("e3", 50), ("e2", 100), ("e1", 5)]);

        for unknown in ["/v1/leads/nobody", "/v1/leads/%FF"] {
            let (status, body) = status_and_body(&f, get(unknown, &[], Some("r"))).await;
            assert_eq!(status, 404, "{unknown}: {body}");
        }
        let rules_read = f.rules.load().await.map_err(|e| e.to_string())?;
        assert!(
            rules_read.is_some(),
            "the rules were read (and stored) for the fold"
        );
        Ok(())
    }

    #[tokio::test]
    async fn a_stage_lists_its_leads_only() -> Result<(), String> {
        let f = api(CountingReader::default())?;
        set_scores(
            &f,
            &[("cold", 40), ("warm", 150), ("hot", 350), ("warmer", 299)],
        )
        .await?;
        let (status, body) = page(&f, &[("stage", "MQL")]).await;
        assert_eq!(status, 200, "{body}");
        let ids: Vec<String> = rows(&body).into_iter().map(|(_, id, _)| id).collect();
        assert_eq!(ids, ["warmer", "warm"]);
        assert_eq!(body["leads"][0]["stage"], "MQL");
        let (_, sql) = page(&f, &[("stage", "SQL")]).await;
        assert_eq!(rows(&sql), [(1, "hot".to_owned(), 350)]);
        let (_, all) = page(&f, &[]).await;
        assert_eq!(all["leads"][3]["stage"], Value::Null, "below every stage");
        let (status, body) = page(&f, &[("stage", "Whale")]).await;
        assert_eq!(status, 400, "{body}");
        assert_eq!(body["error"]["details"][0]["path"], "stage");
        Ok(())
    }

    #[tokio::test]
    async fn a_timeline_explains_caps_the_clamp_a_negative_event_and_decay() -> Result<(), String> {
        use crate::scoring::{Rule, Stage};
        let f = api(CountingReader::default())?;
        let mut rules = ScoreRules::defaults().with_rule(Rule {
            event_type: "PAGE_VIEW".into(),
            points: 5,
            active: true,
            max_per_day: Some(2),
        });
        rules.max = 150;
        rules.stages = vec![Stage::new("MQL", 100)];
        f.rules.save(&rules, 0).await.map_err(|e| e.to_string())?;
        let now = Utc::now();
        let day = (now - chrono::Duration::days(17))
            .date_naive()
            .and_hms_opt(10, 0, 0)
            .map(|t| t.and_utc())
            .ok_or("day")?;
        let minute = |m: i64| day + chrono::Duration::minutes(m);
        for (id, ty, m) in [
            ("t1", "PAGE_VIEW", 0),
            ("t2", "PAGE_VIEW", 1),
            ("t3", "PAGE_VIEW", 2),
            ("t4", "REFUND", 3),
            ("t5", "PURCHASE", 4),
            ("t6", "PURCHASE", 5),
        ] {
            f.history.store("t", ScoredEvent::new(id, ty, minute(m)));
        }
        // By hand: 5, 10, the third view capped (5 removed), the refund clamped at 0 (−90 of
        // −100 removed), 100 (MQL), the second purchase clamped at 150 (50 removed).
        let expected = [
            json!({"eventId": "t1", "points": 5, "score": 5, "stage": null}),
            json!({"eventId": "t2", "points": 5, "score": 10, "stage": null}),
            json!({"eventId": "t3", "points": 0, "score": 10, "stage": null, "removed": {"points": 5, "by": "maxPerDay"}}),
            json!({"eventId": "t4", "points": -10, "score": 0, "stage": null, "removed": {"points": -90, "by": "clamp"}}),
            json!({"eventId": "t5", "points": 100, "score": 100, "stage": "MQL"}),
            json!({"eventId": "t6", "points": 50, "score": 150, "stage": "MQL", "removed": {"points": 50, "by": "clamp"}}),
        ];
        let mut seen = Vec::new();
        let mut query = vec![("limit".to_owned(), "4".to_owned())];
        let last = loop {
            let pairs: Vec<(&str, &str)> = query
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            let (status, page) =
                status_and_body(&f, get("/v1/leads/t/timeline", &pairs, Some("r"))).await;
            assert_eq!(status, 200, "{page}");
            for row in page["events"].as_array().ok_or("events")? {
                let mut row = row.clone();
                if let Some(fields) = row.as_object_mut() {
                    fields.remove("type");
                    fields.remove("timestamp");
                }
                seen.push(row);
            }
            match page["nextCursor"].as_str() {
                Some(cursor) => {
                    query = vec![
                        ("limit".into(), "4".into()),
                        ("cursor".into(), cursor.to_owned()),
                    ]
                }
                None => break page,
            }
        };
        assert_eq!(seen, expected);
        // Decay as of now: whole days since 10:05 on that day, 2 % a day past 14.
        let idle_days = (now - minute(5)).num_days();
        let decayed = match idle_days {
            16 => 144, // 150 × 0.98² = 144.06
            17 => 141, // 150 × 0.98³ = 141.18
            other => return Err(format!("unexpected idle days {other}")),
        };
        assert_eq!(last["decay"]["points"], json!(decayed - 150), "{last}");
        assert_eq!(last["score"], json!(decayed));
        assert_eq!(last["stage"], "MQL");
        assert_eq!(last["leadId"], "t");

        // A rule change between pages makes the cursor stale; an unknown lead is a 404.
        let (_, first) = status_and_body(
            &f,
            get("/v1/leads/t/timeline", &[("limit", "2")], Some("r")),
        )
        .await;
        let cursor = first["nextCursor"].as_str().ok_or("cursor")?.to_owned();
        crate::scoring::put_rule(f.rules.as_ref(), Rule::new("PAGE_VIEW", 7))
            .await
            .map_err(|e| e.to_string())?;
        let (status, body) = status_and_body(
            &f,
            get("/v1/leads/t/timeline", &[("cursor", &cursor)], Some("r")),
        )
        .await;
        assert_eq!(status, 400, "{body}");
        assert_eq!(body["error"]["details"][0]["path"], "cursor");
        let (status, _) =
            status_and_body(&f, get("/v1/leads/nobody/timeline", &[], Some("r"))).await;
        assert_eq!(status, 404);
        Ok(())
    }

    #[tokio::test]
    async fn companies_group_the_leads_active_in_the_range() -> Result<(), String> {
        let f = api(CountingReader::default())?;
        let now = Utc::now();
        let in_range = now - chrono::Duration::hours(2);
        let long_ago = now - chrono::Duration::days(40);
        let lead = |company: Option<&str>, score: i64, events: u64, at: DateTime<Utc>| LeadScore {
            score,
            events,
            last_activity_at: Some(at),
            profile: LeadProfile {
                company: company.map(str::to_owned),
                ..LeadProfile::default()
            },
            ..LeadScore::default()
        };
        for (id, state) in [
            ("a1", lead(Some("Acme"), 100, 3, in_range)),
            ("a2", lead(Some("Acme"), 50, 2, in_range)),
            ("b1", lead(Some("Beta"), 300, 9, in_range)),
            ("n1", lead(None, 10, 1, in_range)),
            ("n2", lead(Some("  "), 20, 1, in_range)),
            ("old", lead(Some("Beta"), 999, 99, long_ago)),
        ] {
            f.leads
                .put_lead(id, &state, 0)
                .await
                .map_err(|e| e.to_string())?;
        }
        let from = (now - chrono::Duration::days(1))
            .format("%Y-%m-%d")
            .to_string();
        let to = now.format("%Y-%m-%d").to_string();
        let (status, body) = status_and_body(
            &f,
            get(
                "/v1/reports/companies",
                &[("from", &from), ("to", &to)],
                Some("r"),
            ),
        )
        .await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(
            body["companies"],
            json!([
                {"company": "(none)", "leads": 2, "events": 2, "score": 30},
                {"company": "Acme", "leads": 2, "events": 5, "score": 150},
                {"company": "Beta", "leads": 1, "events": 9, "score": 300},
            ])
        );
        let (_, top) = status_and_body(
            &f,
            get(
                "/v1/reports/companies",
                &[("from", &from), ("to", &to), ("limit", "1")],
                Some("r"),
            ),
        )
        .await;
        assert_eq!(top["companies"].as_array().map(Vec::len), Some(1));
        let (status, body) = status_and_body(
            &f,
            get("/v1/reports/companies", &[("from", &from)], Some("r")),
        )
        .await;
        assert_eq!(status, 400, "{body}");
        Ok(())
    }
}
