//! The query routes' contract without storage: auth, routing and every 400, with a reader that
//! counts its calls (a refused request must not read anything).

use std::sync::atomic::{AtomicUsize, Ordering};

use async_trait::async_trait;
use serde_json::Value;

use super::QueryApi;
use crate::aggregation::AggregateReader;
use crate::auth::ApiKeys;
use crate::http::HttpRequest;
use crate::rollup::Rollup;
use crate::scoring::MemoryRules;
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

type Api = QueryApi<CountingReader, MemoryRules>;

fn api(reader: CountingReader) -> Result<Api, String> {
    let keys = ApiKeys::parse(&format!(
        "{}:read,{}:admin,{}:ingest",
        ApiKeys::digest("r"),
        ApiKeys::digest("a"),
        ApiKeys::digest("i")
    ))?;
    Ok(QueryApi::new(keys, reader, MemoryRules::default()))
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
    assert_eq!(
        body,
        serde_json::json!({"eventType": "ad.click", "points": -3, "active": false, "maxPerDay": null})
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
