//! The query routes' contract without storage: auth, routing and every 400, with a reader that
//! counts its calls (a refused request must not read anything).

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};

use async_trait::async_trait;
use serde_json::Value;

use super::QueryApi;
use crate::aggregation::AggregateReader;
use crate::auth::ApiKeys;
use crate::http::HttpRequest;
use crate::rollup::Rollup;
use crate::store::StoreError;

#[derive(Default)]
struct CountingReader {
    reads: AtomicUsize,
    down: bool,
}

#[async_trait]
impl AggregateReader for CountingReader {
    async fn day(&self, _: &str) -> Result<Rollup, StoreError> {
        self.reads.fetch_add(1, Ordering::SeqCst);
        if self.down {
            return Err(StoreError::Unavailable("secret internals".into()));
        }
        Ok(Rollup::default())
    }
}

fn api(reader: CountingReader) -> Result<QueryApi<CountingReader>, String> {
    let keys = ApiKeys::parse(&format!(
        "{}:read,{}:admin,{}:ingest",
        ApiKeys::digest("r"),
        ApiKeys::digest("a"),
        ApiKeys::digest("i")
    ))?;
    Ok(QueryApi::new(keys, reader))
}

fn get(path: &str, query: &[(&str, &str)], key: Option<&str>) -> HttpRequest {
    let mut headers = HashMap::new();
    if let Some(key) = key {
        headers.insert("authorization".to_owned(), format!("Bearer {key}"));
    }
    HttpRequest {
        method: "GET".into(),
        path: path.into(),
        headers,
        query: query
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
        body: Vec::new(),
        request_id: "req-1".into(),
    }
}

const DAY: [(&str, &str); 3] = [
    ("window", "day"),
    ("start", "2026-11-01T00:00:00Z"),
    ("end", "2026-11-03T00:00:00Z"),
];

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

async fn status_and_body(api: &QueryApi<CountingReader>, request: HttpRequest) -> (u16, Value) {
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
    assert_eq!(api.aggregates.reads.load(Ordering::SeqCst), 0);

    // The limits themselves are accepted: 31 days by the hour, 400 by the day.
    for query in [
        with(&DAY, &[("window", "hour"), ("end", "2026-12-02T00:00:00Z")]),
        with(&DAY, &[("end", "2027-12-06T00:00:00Z")]),
    ] {
        let (status, body) =
            status_and_body(&api, get("/v1/aggregations", &query, Some("r"))).await;
        assert_eq!(status, 200, "{query:?}: {body}");
    }
    assert_eq!(api.aggregates.reads.load(Ordering::SeqCst), 31 + 400);
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
