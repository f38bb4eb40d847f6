//! The query routes over events that went through the real path on the emulators: posted to
//! `ingest`, queued on moto's SQS, stored by `process` in DynamoDB Local, rolled up from its
//! stream. Every answer is checked against expectations the test computes from what it posted.

use std::collections::BTreeMap;
use std::str::FromStr;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use chrono::{DateTime, DurationRound, Utc};
use rust_decimal::Decimal;
use serde_json::{json, Value};
use tally::auth::ApiKeys;
use tally::aws::{DynamoAggregates, DynamoRules};
use tally::http::{HttpRequest, HttpResponse};
use tally::query::QueryApi;
use tally_tests::pipeline::{sample_request, Pipeline, SAMPLE_INGEST_KEY};
use tally_tests::stream::consume;
use tally_tests::{sdk_config, Stack};

const READ_KEY: &str = "query-read-key";
const ADMIN_KEY: &str = "query-admin-key";

const TYPES: [&str; 4] = ["PAGE_VIEW", "PURCHASE", "REFUND", "user.signup"];
const SOURCES: [&str; 3] = ["web", "tiktok", "api"];
const STAGES: [&str; 3] = ["top", "middle", "bottom"];

/// One posted event as the test sees it.
struct Posted {
    json: Value,
    hour: DateTime<Utc>,
    event_type: &'static str,
    source: &'static str,
    campaign: Option<String>,
    region: Option<String>,
    stage: Option<&'static str>,
    revenue: Option<(String, Decimal)>,
}

/// `count` events over the 60 hours before `now`, from a fixed seed.
fn workload(now: DateTime<Utc>, count: usize) -> Result<Vec<Posted>> {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = move |n: u64| {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x % n
    };
    (0..count)
        .map(|i| {
            let at = now - chrono::Duration::seconds(60 + next(60 * 3600) as i64);
            let event_type = TYPES[next(4) as usize];
            let source = SOURCES[next(3) as usize];
            let campaign = (next(5) > 0).then(|| format!("c{}", next(4)));
            let region = (next(2) == 0).then(|| format!("r{}", next(3)));
            let stage = (next(3) > 0).then(|| STAGES[next(3) as usize]);
            let revenue = match event_type {
                "PURCHASE" => Some((
                    ["USD", "EUR"][next(2) as usize].to_owned(),
                    Decimal::new(100 + next(20_000) as i64, 2),
                )),
                "REFUND" => Some(("USD".to_owned(), -Decimal::new(100 + next(5_000) as i64, 2))),
                _ => None,
            };
            let mut json = json!({
                "eventId": format!("q-{i}"),
                "type": event_type,
                "timestamp": at.to_rfc3339(),
                "source": source,
            });
            if let Some(c) = &campaign {
                json["campaignId"] = json!(c);
            }
            if let Some(r) = &region {
                json["regionId"] = json!(r);
            }
            if let Some(s) = stage {
                json["funnelStage"] = json!(s);
            }
            if let Some((currency, amount)) = &revenue {
                json["revenue"] = json!({"amount": amount.to_string(), "currency": currency});
            }
            Ok(Posted {
                json,
                hour: at.duration_trunc(chrono::Duration::hours(1))?,
                event_type,
                source,
                campaign,
                region,
                stage,
                revenue,
            })
        })
        .collect()
}

/// Count and revenue per currency.
#[derive(Debug, Default, Clone, PartialEq)]
struct Sum {
    count: u64,
    revenue: BTreeMap<String, Decimal>,
}

impl Sum {
    fn add(&mut self, e: &Posted) {
        self.count += 1;
        if let Some((currency, amount)) = &e.revenue {
            *self.revenue.entry(currency.clone()).or_default() += *amount;
        }
    }

    fn from_json(value: &Value) -> Result<Self> {
        let mut revenue = BTreeMap::new();
        for (currency, amount) in value["revenue"].as_object().context("revenue object")? {
            let text = amount.as_str().context("amount is a decimal string")?;
            revenue.insert(currency.clone(), Decimal::from_str(text)?);
        }
        Ok(Self {
            count: value["count"].as_u64().context("count")?,
            revenue,
        })
    }
}

fn get(path: &str, query: &[(&str, &str)], key: &str) -> HttpRequest {
    HttpRequest::new("GET", path)
        .with_query(query)
        .with_bearer(key)
}

fn body(response: &HttpResponse) -> Result<Value> {
    serde_json::from_str(&response.body).context("JSON body")
}

fn stamp(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// `(windowStart, type)` → sums, from a response, checking the order on the way.
fn buckets(response: &Value) -> Result<BTreeMap<(String, String), Sum>> {
    let mut out = BTreeMap::new();
    let mut previous: Option<(String, String)> = None;
    for bucket in response["buckets"].as_array().context("buckets")? {
        let key = (
            bucket["windowStart"]
                .as_str()
                .context("windowStart")?
                .to_owned(),
            bucket["type"].as_str().context("type")?.to_owned(),
        );
        ensure!(
            previous.as_ref() < Some(&key),
            "buckets out of order at {key:?}"
        );
        previous = Some(key.clone());
        let sum = Sum::from_json(bucket)?;
        ensure!(sum.count > 0, "an empty bucket was returned");
        out.insert(key, sum);
    }
    Ok(out)
}

fn expected_buckets<'a>(
    events: impl IntoIterator<Item = &'a Posted>,
    window: chrono::Duration,
) -> Result<BTreeMap<(String, String), Sum>> {
    let mut out: BTreeMap<(String, String), Sum> = BTreeMap::new();
    for e in events {
        let start = e.hour.duration_trunc(window)?;
        out.entry((stamp(start), e.event_type.to_owned()))
            .or_default()
            .add(e);
    }
    Ok(out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_aggregation_route_answers_what_was_posted() -> Result<()> {
    let pipeline = Pipeline::start("query_routes", &[]).await?;
    let rollup = consume(&pipeline.stack, false).await?;
    let now = Utc::now();
    let events = workload(now, 240)?;

    // Posted in batches through ingest, some twice: duplicates must not count.
    let mut posted: Vec<Value> = events.iter().map(|e| e.json.clone()).collect();
    posted.extend(events[..20].iter().map(|e| e.json.clone()));
    for chunk in posted.chunks(50) {
        let request = HttpRequest::new("POST", "/v1/events/batch")
            .with_bearer(SAMPLE_INGEST_KEY)
            .with_json(serde_json::to_vec(chunk)?);
        let response = pipeline.post(request).await;
        ensure!(
            response.status == 202,
            "ingest answered {}: {}",
            response.status,
            response.body
        );
    }
    pipeline.drain().await?;

    let ddb = sdk_config(&pipeline.stack.dynamodb_endpoint);
    let api = QueryApi::new(
        ApiKeys::parse(&format!(
            "{}:read,{}:admin,{}:ingest",
            ApiKeys::digest(READ_KEY),
            ApiKeys::digest(ADMIN_KEY),
            ApiKeys::digest(SAMPLE_INGEST_KEY)
        ))
        .map_err(anyhow::Error::msg)?,
        DynamoAggregates::new(&ddb, pipeline.stack.table("AnalyticsTable")?.to_owned()),
        DynamoRules::new(&ddb, pipeline.stack.table("AnalyticsTable")?.to_owned()),
    );
    let start = now.duration_trunc(chrono::Duration::days(1))? - chrono::Duration::days(3);
    let end = now.duration_trunc(chrono::Duration::days(1))? + chrono::Duration::days(1);
    let (start_text, end_text) = (stamp(start), stamp(end));

    // Wait for the rollup's windows to flush everything.
    let expected_days = expected_buckets(&events, chrono::Duration::days(1))?;
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let response = api
            .handle(get(
                "/v1/aggregations",
                &[
                    ("window", "day"),
                    ("start", &start_text),
                    ("end", &end_text),
                ],
                READ_KEY,
            ))
            .await;
        ensure!(response.status == 200, "{}", response.body);
        let found = body(&response)?;
        if buckets(&found)? == expected_days {
            assert_eq!(found["window"], "day");
            assert_eq!(found["start"], start_text);
            assert_eq!(found["end"], end_text);
            assert_eq!(found["filters"], json!({}));
            break;
        }
        if Instant::now() > deadline {
            bail!("daily aggregates never matched: {found}");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    rollup.poller.stop().await;

    // Hourly, over the whole workload, with the startTime/endTime spellings and epoch millis.
    let (start_ms, end_ms) = (
        start.timestamp_millis().to_string(),
        end.timestamp_millis().to_string(),
    );
    let response = api
        .handle(get(
            "/v1/aggregations",
            &[
                ("window", "hour"),
                ("startTime", &start_ms),
                ("endTime", &end_ms),
            ],
            ADMIN_KEY,
        ))
        .await;
    assert_eq!(response.status, 200, "{}", response.body);
    assert_eq!(
        buckets(&body(&response)?)?,
        expected_buckets(&events, chrono::Duration::hours(1))?
    );

    // A range not on hour boundaries widens to whole hours (and says so).
    let some_hour = events[0].hour;
    let inside = stamp(some_hour + chrono::Duration::minutes(10));
    let response = api
        .handle(get(
            "/v1/aggregations",
            &[
                ("window", "hour"),
                ("start", &inside),
                ("end", &stamp(some_hour + chrono::Duration::minutes(20))),
            ],
            READ_KEY,
        ))
        .await;
    let found = body(&response)?;
    assert_eq!(found["start"], stamp(some_hour));
    assert_eq!(found["end"], stamp(some_hour + chrono::Duration::hours(1)));
    assert_eq!(
        buckets(&found)?,
        expected_buckets(
            events.iter().filter(|e| e.hour == some_hour),
            chrono::Duration::hours(1)
        )?
    );

    // Every supported filter, with and without a type, against the same filter applied here.
    type Select = Box<dyn Fn(&Posted) -> bool>;
    let filters: Vec<(Vec<(&str, &str)>, Select)> = vec![
        (
            vec![("campaignId", "c1")],
            Box::new(|e: &Posted| e.campaign.as_deref() == Some("c1")),
        ),
        (
            vec![("regionId", "r2")],
            Box::new(|e: &Posted| e.region.as_deref() == Some("r2")),
        ),
        (
            vec![("source", "tiktok")],
            Box::new(|e: &Posted| e.source == "tiktok"),
        ),
        (
            vec![("funnelStage", "middle")],
            Box::new(|e: &Posted| e.stage == Some("middle")),
        ),
        (
            vec![("source", "web"), ("funnelStage", "bottom")],
            Box::new(|e: &Posted| e.source == "web" && e.stage == Some("bottom")),
        ),
        (
            vec![("type", "PURCHASE")],
            Box::new(|e: &Posted| e.event_type == "PURCHASE"),
        ),
        (
            vec![("type", "REFUND"), ("campaignId", "c2")],
            Box::new(|e: &Posted| e.event_type == "REFUND" && e.campaign.as_deref() == Some("c2")),
        ),
    ];
    for (filter, select) in &filters {
        let mut query = vec![
            ("window", "day"),
            ("start", start_text.as_str()),
            ("end", end_text.as_str()),
        ];
        query.extend(filter.iter().copied());
        let response = api.handle(get("/v1/aggregations", &query, READ_KEY)).await;
        assert_eq!(response.status, 200, "{filter:?}: {}", response.body);
        let found = body(&response)?;
        let expected = expected_buckets(
            events.iter().filter(|e| select(e)),
            chrono::Duration::days(1),
        )?;
        assert!(
            !expected.is_empty(),
            "{filter:?} selects nothing; the workload is too small"
        );
        assert_eq!(buckets(&found)?, expected, "{filter:?}");
        let echoed: BTreeMap<String, Value> = filter
            .iter()
            .map(|(k, v)| ((*k).to_owned(), json!(v)))
            .collect();
        assert_eq!(found["filters"], json!(echoed), "{filter:?}");
    }

    // Top campaigns by count of one type, and by USD and EUR revenue, with their spellings.
    for (path, metric, currency) in [
        ("/v1/aggregations/top", "count", None),
        ("/v1/aggregations/top-performing", "revenue", Some("USD")),
        ("/v1/aggregations/top", "sum.revenue", Some("EUR")),
    ] {
        let ty = if metric == "count" {
            "PAGE_VIEW"
        } else {
            "PURCHASE"
        };
        let mut query = vec![
            ("metric", metric),
            ("dimension", "campaignId"),
            ("type", ty),
            ("start", start_text.as_str()),
            ("end", end_text.as_str()),
            ("limit", "3"),
        ];
        if let Some(c) = currency {
            query.push(("currency", c));
        }
        let response = api.handle(get(path, &query, READ_KEY)).await;
        assert_eq!(response.status, 200, "{path} {metric}: {}", response.body);
        let found = body(&response)?;

        let mut per_campaign: BTreeMap<String, Sum> = BTreeMap::new();
        for e in events.iter().filter(|e| e.event_type == ty) {
            if let Some(c) = &e.campaign {
                per_campaign.entry(c.clone()).or_default().add(e);
            }
        }
        let mut ranked: Vec<(String, Sum)> = per_campaign
            .into_iter()
            .filter(|(_, s)| currency.is_none_or(|c| s.revenue.contains_key(c)))
            .collect();
        let value_of = |s: &Sum| match currency {
            None => Decimal::from(s.count),
            Some(c) => s.revenue.get(c).copied().unwrap_or_default(),
        };
        ranked.sort_by(|(a, sa), (b, sb)| value_of(sb).cmp(&value_of(sa)).then(a.cmp(b)));
        ranked.truncate(3);
        assert!(!ranked.is_empty());

        let results = found["results"].as_array().context("results")?;
        assert_eq!(results.len(), ranked.len(), "{found}");
        for (i, (result, (campaign, sum))) in results.iter().zip(&ranked).enumerate() {
            assert_eq!(result["rank"], i + 1);
            assert_eq!(result["value"], campaign.as_str());
            assert_eq!(Sum::from_json(result)?, *sum, "{found}");
        }
        assert_eq!(found["dimension"], "campaignId");
        assert_eq!(found["type"], ty);
        assert_eq!(
            found["metric"],
            if metric == "count" {
                "count"
            } else {
                "revenue"
            }
        );
    }

    // Rules: the defaults on first read, then an admin's change, as DynamoDB Local stores them.
    let rules = body(&api.handle(get("/v1/rules", &[], READ_KEY)).await)?;
    let points_of = |rules: &Value, ty: &str| {
        rules["rules"]
            .as_array()
            .and_then(|r| r.iter().find(|r| r["eventType"] == ty))
            .map(|r| r["points"].clone())
    };
    assert_eq!(points_of(&rules, "PURCHASE"), Some(json!(100)), "{rules}");
    let change = HttpRequest::new("PUT", "/v1/rules/PURCHASE")
        .with_json(r#"{"points": 120, "maxPerDay": 2}"#)
        .with_bearer(ADMIN_KEY);
    let refused = change.clone().with_bearer(READ_KEY);
    assert_eq!(api.handle(refused).await.status, 403);
    let response = api.handle(change).await;
    assert_eq!(response.status, 200, "{}", response.body);
    let rules = body(&api.handle(get("/v1/rules", &[], READ_KEY)).await)?;
    assert_eq!(points_of(&rules, "PURCHASE"), Some(json!(120)), "{rules}");
    Ok(())
}

/// The samples in `events/` drive the handler as `sam local invoke -e` would.
#[tokio::test]
async fn the_samples_drive_the_query_handler() -> Result<()> {
    let stack = Stack::provision("query_samples").await?;
    let ddb = sdk_config(&stack.dynamodb_endpoint);
    let table = stack.table("AnalyticsTable")?.to_owned();
    let api = QueryApi::new(
        ApiKeys::parse(&format!(
            "{}:read,{}:admin",
            ApiKeys::digest("sample-read-key"),
            ApiKeys::digest("sample-admin-key")
        ))
        .map_err(anyhow::Error::msg)?,
        DynamoAggregates::new(&ddb, table.clone()),
        DynamoRules::new(&ddb, table),
    );
    let response = api
        .handle(sample_request("api-get-aggregations.json", |_| {})?)
        .await;
    assert_eq!(response.status, 200, "{}", response.body);
    let found = body(&response)?;
    assert_eq!(found["filters"], json!({"campaignId": "c1"}));
    assert_eq!(found["buckets"], json!([]));
    let response = api
        .handle(sample_request("api-get-top.json", |_| {})?)
        .await;
    assert_eq!(response.status, 200, "{}", response.body);
    assert_eq!(body(&response)?["currency"], "USD");
    let response = api
        .handle(sample_request("api-put-rule.json", |_| {})?)
        .await;
    assert_eq!(response.status, 200, "{}", response.body);
    assert_eq!(
        body(&response)?,
        json!({"eventType": "PAGE_VIEW", "points": 5, "active": true, "maxPerDay": 10})
    );
    Ok(())
}
