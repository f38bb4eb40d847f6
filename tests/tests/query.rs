//! The query routes over events that went through the real path on the emulators: posted to
//! `ingest`, queued on moto's SQS, stored by `process` in DynamoDB Local, rolled up from its
//! stream. Every answer is checked against expectations the test computes from what it posted.

use std::collections::{BTreeMap, BTreeSet};
use std::str::FromStr;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use chrono::{DateTime, DurationRound, NaiveDate, Utc};
use rust_decimal::Decimal;
use serde_json::{json, Value};
use tally::aggregation::Reconciler;
use tally::auth::ApiKeys;
use tally::aws::{DynamoAggregates, DynamoEventStore};
use tally::http::{HttpRequest, HttpResponse};
use tally::query::QueryApi;
use tally::request_cost::RequestCost;
use tally_tests::pipeline::{query_ports, sample_request, Pipeline, SAMPLE_INGEST_KEY};
use tally_tests::stream::consume;
use tally_tests::Stack;

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
    user: Option<User>,
}

/// The acting user's demographics as posted.
struct User {
    age: Option<u64>,
    gender: Option<&'static str>,
    country: Option<&'static str>,
    followers: Option<u64>,
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
            let user = (next(4) > 0).then(|| User {
                age: (next(5) > 0).then(|| next(80)),
                gender: (next(3) > 0).then(|| ["female", "Male", "nonbinary"][next(3) as usize]),
                country: (next(3) > 0).then(|| ["US", "DE", "BR"][next(3) as usize]),
                followers: (next(3) > 0)
                    .then(|| [0, 999, 1_000, 50_000, 2_000_000][next(5) as usize]),
            });
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
            if let Some(u) = &user {
                let mut fields = serde_json::Map::new();
                if let Some(age) = u.age {
                    fields.insert("age".into(), json!(age));
                }
                if let Some(gender) = u.gender {
                    fields.insert("gender".into(), json!(gender));
                }
                if let Some(country) = u.country {
                    fields.insert("country".into(), json!(country));
                }
                if let Some(followers) = u.followers {
                    fields.insert("followers".into(), json!(followers));
                }
                json["user"] = Value::Object(fields);
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
                user,
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

/// An RFC 3339 instant of a response.
fn instant(value: &Value) -> Result<DateTime<Utc>> {
    let text = value.as_str().context("an instant")?;
    Ok(DateTime::parse_from_rfc3339(text)?.with_timezone(&Utc))
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

    let api = QueryApi::new(
        ApiKeys::parse(&format!(
            "{}:read,{}:admin,{}:ingest",
            ApiKeys::digest(READ_KEY),
            ApiKeys::digest(ADMIN_KEY),
            ApiKeys::digest(SAMPLE_INGEST_KEY)
        ))
        .map_err(anyhow::Error::msg)?,
        query_ports(&pipeline.stack)?,
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

    // Every route over the stream's window parts alone.
    let unreconciled = check_routes(&api, &events, now, (start, end), &BTreeSet::new()).await?;

    // Reconciled, each day has a daily summary that whole-day reads take instead of its hours:
    // the same answers, fewer read units.
    let ddb = tally_tests::sdk_config(&pipeline.stack.dynamodb_endpoint);
    let reconciler = Reconciler::new(
        DynamoAggregates::new(&ddb, pipeline.stack.table("AnalyticsTable")?.to_owned()),
        DynamoEventStore::new(&ddb, pipeline.stack.table("EventsTable")?.to_owned()),
        chrono::Duration::zero(),
    );
    let mut summarised = BTreeSet::new();
    for day in start
        .date_naive()
        .iter_days()
        .take_while(|d| *d < end.date_naive())
    {
        let report = reconciler
            .reconcile_day(
                &day.format("%Y-%m-%d").to_string(),
                Utc::now() + chrono::Duration::hours(1),
            )
            .await?;
        ensure!(report.settled && report.drift_counters == 0, "{report:?}");
        if report.written {
            summarised.insert(day);
        }
    }
    ensure!(
        summarised.len() >= 3,
        "the workload spans at least three days: {summarised:?}"
    );
    let reconciled = check_routes(&api, &events, now, (start, end), &summarised).await?;
    assert!(
        reconciled.read_units < unreconciled.read_units,
        "{reconciled:?} vs {unreconciled:?}"
    );

    // The replaced systems' spellings answer exactly as the v1 routes do, over the same data.
    let window = [
        ("window", "day"),
        ("start", start_text.as_str()),
        ("end", end_text.as_str()),
    ];
    let top = [
        ("metric", "count"),
        ("dimension", "campaignId"),
        ("type", "PAGE_VIEW"),
        ("start", start_text.as_str()),
        ("end", end_text.as_str()),
    ];
    let range = [("from", start_text.as_str()), ("to", end_text.as_str())];
    type Query<'a> = &'a [(&'a str, &'a str)];
    let mut aliases: Vec<(String, &str, Query)> = vec![
        ("/api/aggregations".into(), "/v1/aggregations", &window),
        (
            "/api/aggregations/top-performing".into(),
            "/v1/aggregations/top",
            &top,
        ),
    ];
    for report in ["events", "revenue", "demographics"] {
        for prefix in ["/api/reports", "/api/v1/reports", "/reports"] {
            let v1 = match report {
                "events" => "/v1/reports/events",
                "revenue" => "/v1/reports/revenue",
                _ => "/v1/reports/demographics",
            };
            aliases.push((format!("{prefix}/{report}"), v1, &range));
        }
    }
    for (alias, v1, query) in aliases {
        let old = api.handle(get(&alias, query, READ_KEY)).await;
        let new = api.handle(get(v1, query, READ_KEY)).await;
        ensure!(old.status == 200, "{alias}: {} {}", old.status, old.body);
        let (old, new) = (body(&old)?, body(&new)?);
        ensure!(old == new, "{alias} answered {old}, {v1} {new}");
        ensure!(old.to_string().len() > 100, "{alias}: {old}");
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

/// Every aggregation route, filter and report against expectations computed from `events`, and
/// what a 30-day top-10 costs given the days that have a daily summary (`summarised`).
async fn check_routes(
    api: &QueryApi,
    events: &[Posted],
    now: DateTime<Utc>,
    (start, end): (DateTime<Utc>, DateTime<Utc>),
    summarised: &BTreeSet<NaiveDate>,
) -> Result<RequestCost> {
    let (start_text, end_text) = (stamp(start), stamp(end));
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
        expected_buckets(events, chrono::Duration::hours(1))?
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

    check_reports(api, events, start, end).await?;

    // A 30-day top-10 reads each UTC day it touches once (a Query per day partition), whatever
    // the number of campaigns: at most 31 DynamoDB requests, 62 with no summaries at all, well
    // within the budget of 100.
    let month_start = now - chrono::Duration::days(30);
    let (response, cost) = RequestCost::measure(api.handle(get(
        "/v1/aggregations/top",
        &[
            ("metric", "revenue"),
            ("dimension", "campaignId"),
            ("start", month_start.to_rfc3339().as_str()),
            ("end", now.to_rfc3339().as_str()),
        ],
        READ_KEY,
    )))
    .await;
    assert_eq!(response.status, 200, "{}", response.body);
    let found = body(&response)?;
    let (first, last) = (
        instant(&found["start"])?.date_naive(),
        (instant(&found["end"])? - chrono::Duration::milliseconds(1)).date_naive(),
    );
    // The range's edges are read by the hour, one request each; a whole day with a summary
    // takes one request, one without (never reconciled, or empty) a second for its hours.
    let (range_start, range_end) = (instant(&found["start"])?, instant(&found["end"])?);
    let expected_requests: u64 = first
        .iter_days()
        .take_while(|d| *d <= last)
        .map(|d| {
            let day_start = d.and_time(chrono::NaiveTime::MIN).and_utc();
            let whole =
                range_start <= day_start && day_start + chrono::Duration::days(1) <= range_end;
            match (whole, summarised.contains(&d)) {
                (false, _) | (true, true) => 1,
                (true, false) => 2,
            }
        })
        .sum();
    assert_eq!(cost.requests, expected_requests, "{cost:?} for {found}");
    assert!(cost.requests <= 100 && cost.read_units > 0.0, "{cost:?}");
    Ok(cost)
}

fn age_band(age: Option<u64>) -> &'static str {
    match age {
        None => "unknown",
        Some(a) if a < 18 => "<18",
        Some(a) if a < 25 => "18-24",
        Some(a) if a < 35 => "25-34",
        Some(a) if a < 45 => "35-44",
        Some(a) if a < 55 => "45-54",
        Some(a) if a < 65 => "55-64",
        Some(_) => "65+",
    }
}

fn followers_band(followers: Option<u64>) -> &'static str {
    match followers {
        None => "unknown",
        Some(f) if f < 1_000 => "<1k",
        Some(f) if f < 10_000 => "1k-10k",
        Some(f) if f < 100_000 => "10k-100k",
        Some(_) => "100k+",
    }
}

fn decimals(value: &Value) -> Result<BTreeMap<String, Decimal>> {
    value
        .as_object()
        .context("a revenue object")?
        .iter()
        .map(|(currency, amount)| {
            let text = amount.as_str().context("amount is a decimal string")?;
            Ok((currency.clone(), Decimal::from_str(text)?))
        })
        .collect()
}

/// The three reports over the whole workload, with dates (`to` inclusive) and with filters,
/// each against the same breakdown computed here from what was posted.
async fn check_reports(
    api: &QueryApi,
    events: &[Posted],
    start: DateTime<Utc>,
    end: DateTime<Utc>,
) -> Result<()> {
    let from = start.format("%Y-%m-%d").to_string();
    let to = (end - chrono::Duration::days(1))
        .format("%Y-%m-%d")
        .to_string();
    let range = [("from", from.as_str()), ("to", to.as_str())];
    let with = |extra: &[(&'static str, &'static str)]| -> Vec<(&str, &str)> {
        range.iter().copied().chain(extra.iter().copied()).collect()
    };

    // Events, by every filter the route takes.
    type Select = fn(&Posted) -> bool;
    let cases: [(&[(&str, &str)], Select); 5] = [
        (&[], |_| true),
        (&[("source", "web")], |e| e.source == "web"),
        (&[("funnelStage", "top")], |e| e.stage == Some("top")),
        (&[("source", "tiktok"), ("funnelStage", "bottom")], |e| {
            e.source == "tiktok" && e.stage == Some("bottom")
        }),
        (&[("type", "PURCHASE"), ("source", "api")], |e| {
            e.event_type == "PURCHASE" && e.source == "api"
        }),
    ];
    for (filter, select) in cases {
        let response = api
            .handle(get("/v1/reports/events", &with(filter), READ_KEY))
            .await;
        assert_eq!(response.status, 200, "{filter:?}: {}", response.body);
        let found = body(&response)?;
        let selected: Vec<&Posted> = events.iter().filter(|e| select(e)).collect();
        ensure!(!selected.is_empty(), "{filter:?} selects nothing");
        let mut by_source: BTreeMap<&str, u64> = BTreeMap::new();
        let mut by_stage: BTreeMap<&str, u64> = BTreeMap::new();
        let mut by_type: BTreeMap<&str, u64> = BTreeMap::new();
        for e in &selected {
            *by_source.entry(e.source).or_default() += 1;
            *by_stage.entry(e.stage.unwrap_or("unknown")).or_default() += 1;
            *by_type.entry(e.event_type).or_default() += 1;
        }
        assert_eq!(found["from"], stamp(start), "{filter:?}");
        assert_eq!(found["to"], stamp(end), "{filter:?}");
        assert_eq!(found["total"], selected.len(), "{filter:?}");
        assert_eq!(found["bySource"], json!(by_source), "{filter:?}");
        assert_eq!(found["byFunnelStage"], json!(by_stage), "{filter:?}");
        assert_eq!(found["byType"], json!(by_type), "{filter:?}");
    }

    // Revenue, by source and campaign, revenue-bearing events only.
    type Filter = (Option<&'static str>, Option<&'static str>);
    let cases: [Filter; 4] = [
        (None, None),
        (Some("web"), None),
        (None, Some("c1")),
        (Some("tiktok"), Some("c2")),
    ];
    for (source, campaign) in cases {
        let mut filter: Vec<(&str, &str)> = Vec::new();
        if let Some(s) = source {
            filter.push(("source", s));
        }
        if let Some(c) = campaign {
            filter.push(("campaignId", c));
        }
        let mut query: Vec<(&str, &str)> = range.to_vec();
        query.extend(filter.iter().copied());
        let response = api
            .handle(get("/v1/reports/revenue", &query, READ_KEY))
            .await;
        assert_eq!(response.status, 200, "{filter:?}: {}", response.body);
        let found = body(&response)?;
        let selected: Vec<&Posted> = events
            .iter()
            .filter(|e| e.revenue.is_some())
            .filter(|e| source.is_none_or(|s| e.source == s))
            .filter(|e| campaign.is_none_or(|c| e.campaign.as_deref() == Some(c)))
            .collect();
        ensure!(!selected.is_empty(), "{filter:?} selects nothing");
        let mut total = Sum::default();
        let mut by_source: BTreeMap<&str, Sum> = BTreeMap::new();
        let mut by_campaign: BTreeMap<&str, Sum> = BTreeMap::new();
        for e in &selected {
            total.add(e);
            by_source.entry(e.source).or_default().add(e);
            if let Some(c) = &e.campaign {
                by_campaign.entry(c).or_default().add(e);
            }
        }
        assert_eq!(decimals(&found["total"])?, total.revenue, "{filter:?}");
        assert_eq!(found["purchases"], total.count, "{filter:?}");
        let found_sources: BTreeMap<String, BTreeMap<String, Decimal>> = found["bySource"]
            .as_object()
            .context("bySource")?
            .iter()
            .map(|(s, v)| Ok((s.clone(), decimals(v)?)))
            .collect::<Result<_>>()?;
        let expected_sources: BTreeMap<String, BTreeMap<String, Decimal>> = by_source
            .iter()
            .map(|(s, sum)| ((*s).to_owned(), sum.revenue.clone()))
            .collect();
        assert_eq!(found_sources, expected_sources, "{filter:?}");
        let mut ranked: Vec<(&str, Sum)> = by_campaign.into_iter().collect();
        let usd = |s: &Sum| s.revenue.get("USD").copied().unwrap_or_default();
        ranked.sort_by(|(a, sa), (b, sb)| {
            usd(sb)
                .cmp(&usd(sa))
                .then(sb.count.cmp(&sa.count))
                .then(a.cmp(b))
        });
        let campaigns = found["byCampaign"].as_array().context("byCampaign")?;
        assert_eq!(campaigns.len(), ranked.len(), "{filter:?}: {found}");
        for (row, (id, sum)) in campaigns.iter().zip(&ranked) {
            assert_eq!(row["campaignId"], *id, "{filter:?}: {found}");
            assert_eq!(row["purchases"], sum.count, "{filter:?}");
            assert_eq!(decimals(&row["revenue"])?, sum.revenue, "{filter:?}");
        }
    }

    // Demographics, over every source and over one.
    for source in [None, Some("tiktok")] {
        let mut query: Vec<(&str, &str)> = range.to_vec();
        if let Some(s) = source {
            query.push(("source", s));
        }
        let response = api
            .handle(get("/v1/reports/demographics", &query, READ_KEY))
            .await;
        assert_eq!(response.status, 200, "{source:?}: {}", response.body);
        let found = body(&response)?;
        let selected: Vec<&Posted> = events
            .iter()
            .filter(|e| source.is_none_or(|s| e.source == s))
            .collect();
        let mut age: BTreeMap<&str, u64> = [
            "<18", "18-24", "25-34", "35-44", "45-54", "55-64", "65+", "unknown",
        ]
        .into_iter()
        .map(|b| (b, 0))
        .collect();
        let mut followers: BTreeMap<&str, u64> = ["<1k", "1k-10k", "10k-100k", "100k+", "unknown"]
            .into_iter()
            .map(|b| (b, 0))
            .collect();
        let mut gender: BTreeMap<String, u64> = BTreeMap::new();
        let mut countries: BTreeMap<&str, u64> = BTreeMap::new();
        for e in &selected {
            let u = e.user.as_ref();
            *age.entry(age_band(u.and_then(|u| u.age))).or_default() += 1;
            *followers
                .entry(followers_band(u.and_then(|u| u.followers)))
                .or_default() += 1;
            let g = u
                .and_then(|u| u.gender)
                .map_or("unknown".to_owned(), str::to_lowercase);
            *gender.entry(g).or_default() += 1;
            *countries
                .entry(u.and_then(|u| u.country).unwrap_or("unknown"))
                .or_default() += 1;
        }
        let mut countries: Vec<(&str, u64)> = countries.into_iter().collect();
        countries.sort_by(|(a, an), (b, bn)| bn.cmp(an).then(a.cmp(b)));
        let countries: Vec<Value> = countries
            .into_iter()
            .map(|(country, count)| json!({"country": country, "count": count}))
            .collect();
        assert_eq!(found["events"], selected.len(), "{source:?}");
        assert_eq!(found["age"], json!(age), "{source:?}");
        assert_eq!(found["followers"], json!(followers), "{source:?}");
        assert_eq!(found["gender"], json!(gender), "{source:?}");
        assert_eq!(found["countries"], json!(countries), "{source:?}");
    }

    // `to` as an instant is exclusive: the last day's events drop out.
    let last_day = end - chrono::Duration::days(1);
    let response = api
        .handle(get(
            "/v1/reports/events",
            &[("from", &from), ("to", &stamp(last_day))],
            READ_KEY,
        ))
        .await;
    assert_eq!(response.status, 200, "{}", response.body);
    let expected = events.iter().filter(|e| e.hour < last_day).count();
    assert_eq!(body(&response)?["total"], expected);
    Ok(())
}

/// The samples in `events/` drive the handler as `sam local invoke -e` would.
#[tokio::test]
async fn the_samples_drive_the_query_handler() -> Result<()> {
    let stack = Stack::provision("query_samples").await?;
    let api = QueryApi::new(
        ApiKeys::parse(&format!(
            "{}:read,{}:admin",
            ApiKeys::digest("sample-read-key"),
            ApiKeys::digest("sample-admin-key")
        ))
        .map_err(anyhow::Error::msg)?,
        query_ports(&stack)?,
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
    for (sample, field) in [
        ("api-get-report-events.json", "bySource"),
        ("api-get-report-revenue.json", "byCampaign"),
        ("api-get-report-demographics.json", "age"),
    ] {
        let response = api.handle(sample_request(sample, |_| {})?).await;
        assert_eq!(response.status, 200, "{sample}: {}", response.body);
        let found = body(&response)?;
        assert_eq!(found["from"], "2026-11-01T00:00:00.000Z", "{sample}");
        assert_eq!(found["to"], "2026-11-25T00:00:00.000Z", "{sample}");
        assert!(!found[field].is_null(), "{sample}: {found}");
    }
    let response = api
        .handle(sample_request("api-get-leads.json", |_| {})?)
        .await;
    assert_eq!(response.status, 200, "{}", response.body);
    assert_eq!(body(&response)?["leads"], json!([]));
    let response = api
        .handle(sample_request("api-get-metrics.json", |_| {})?)
        .await;
    assert_eq!(response.status, 200, "{}", response.body);
    assert!(
        response
            .body
            .contains("tally_queue_depth{queue=\"work\"} 0"),
        "{}",
        response.body
    );
    // A fresh stack: no leads, no companies, the default stages.
    for (sample, field, expected) in [
        ("api-get-leads-stage.json", "leads", json!([])),
        ("api-get-report-companies.json", "companies", json!([])),
        (
            "api-get-scoring.json",
            "stages",
            json!([{"name": "MQL", "minScore": 100}, {"name": "SQL", "minScore": 300}]),
        ),
    ] {
        let response = api.handle(sample_request(sample, |_| {})?).await;
        assert_eq!(response.status, 200, "{sample}: {}", response.body);
        assert_eq!(body(&response)?[field], expected, "{sample}");
    }
    // The defaults are version 1, which the sample change is based on.
    let response = api
        .handle(sample_request("api-put-scoring.json", |_| {})?)
        .await;
    assert_eq!(response.status, 200, "{}", response.body);
    assert_eq!(
        body(&response)?["stages"][0],
        json!({"name": "MQL", "minScore": 80})
    );
    let again = api
        .handle(sample_request("api-put-scoring.json", |_| {})?)
        .await;
    assert_eq!(again.status, 409, "{}", again.body);
    let response = api
        .handle(sample_request("api-get-lead-timeline.json", |_| {})?)
        .await;
    assert_eq!(response.status, 404, "no events yet: {}", response.body);
    let response = api
        .handle(sample_request("api-put-rule.json", |_| {})?)
        .await;
    assert_eq!(response.status, 200, "{}", response.body);
    let mut rule = body(&response)?;
    // The set's new version comes back with the rule, for the next conditional change.
    let version = rule.as_object_mut().and_then(|r| r.remove("version"));
    assert!(version.is_some_and(|v| v.as_u64().is_some()), "{rule}");
    assert_eq!(
        rule,
        json!({"eventType": "PAGE_VIEW", "points": 5, "active": true, "maxPerDay": 10})
    );
    Ok(())
}

/// A lead event as posted, and the fold the test computes itself (default rules: no caps, no
/// decay within days, scores clamped to 0..=1000).
#[derive(Clone)]
struct LeadPost {
    id: String,
    lead: String,
    event_type: &'static str,
    at: DateTime<Utc>,
}

fn default_points(event_type: &str) -> i64 {
    match event_type {
        "PAGE_VIEW" => 5,
        "EMAIL_OPEN" => 10,
        "DEMO_REQUEST" => 50,
        "PURCHASE" => 100,
        "REFUND" => -100,
        _ => 0,
    }
}

/// Per lead: score, event count, and `(eventId, points)` newest first.
type Expected = BTreeMap<String, (i64, u64, Vec<(String, i64)>)>;

fn expected_leads(posts: &[LeadPost]) -> Expected {
    let mut by_lead: BTreeMap<&str, Vec<&LeadPost>> = BTreeMap::new();
    for p in posts {
        by_lead.entry(&p.lead).or_default().push(p);
    }
    by_lead
        .into_iter()
        .map(|(lead, mut events)| {
            events.sort_by(|a, b| (a.at, &a.id).cmp(&(b.at, &b.id)));
            let mut score = 0;
            let mut recent = Vec::new();
            for e in &events {
                let points = default_points(e.event_type);
                score = (score + points).clamp(0, 1000);
                recent.push((e.id.clone(), points));
            }
            recent.reverse();
            (lead.to_owned(), (score, events.len() as u64, recent))
        })
        .collect()
}

/// `(leadId, score)` in leaderboard order: score descending, then id.
fn board_order(expected: &Expected) -> Vec<(String, i64)> {
    let mut order: Vec<(String, i64)> = expected
        .iter()
        .map(|(id, (score, _, _))| (id.clone(), *score))
        .collect();
    order.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    order
}

fn lead_rows(page: &Value) -> Result<Vec<(u64, String, i64, u64)>> {
    page["leads"]
        .as_array()
        .context("leads")?
        .iter()
        .map(|r| {
            Ok((
                r["rank"].as_u64().context("rank")?,
                r["leadId"].as_str().context("leadId")?.to_owned(),
                r["score"].as_i64().context("score")?,
                r["eventCount"].as_u64().context("eventCount")?,
            ))
        })
        .collect()
}

async fn post_leads(pipeline: &Pipeline, posts: &[LeadPost]) -> Result<()> {
    let events: Vec<Value> = posts
        .iter()
        .map(|p| {
            json!({
                "eventId": p.id,
                "type": p.event_type,
                "timestamp": stamp(p.at),
                "leadId": p.lead,
                "lead": {"email": format!("{}@example.com", p.lead)},
            })
        })
        .collect();
    for chunk in events.chunks(100) {
        let request = HttpRequest::new("POST", "/v1/events/batch")
            .with_bearer(SAMPLE_INGEST_KEY)
            .with_json(serde_json::to_vec(chunk)?);
        let response = pipeline.post(request).await;
        ensure!(response.status == 202, "ingest: {}", response.body);
    }
    pipeline.drain().await?;
    Ok(())
}

/// Waits until the whole leaderboard reads `order` (the stream mapping scores as events arrive).
async fn score_until(api: &QueryApi, order: &[(String, i64)]) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let page = body(
            &api.handle(get("/v1/leads", &[("limit", "100")], READ_KEY))
                .await,
        )?;
        let found: Vec<(String, i64)> = lead_rows(&page)?
            .into_iter()
            .map(|(_, id, score, _)| (id, score))
            .collect();
        if found == order {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("the leaderboard never read {order:?}: {page}");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn leaderboard_pages_and_single_leads_over_the_real_pipeline() -> Result<()> {
    let pipeline = Pipeline::start("query_leads", &[]).await?;
    let consumer = consume(&pipeline.stack, false).await?;
    let api = QueryApi::new(
        ApiKeys::parse(&format!("{}:read", ApiKeys::digest(READ_KEY)))
            .map_err(anyhow::Error::msg)?,
        query_ports(&pipeline.stack)?,
    );
    let t0 = Utc::now() - chrono::Duration::hours(30);
    let types = [
        "PAGE_VIEW",
        "EMAIL_OPEN",
        "PURCHASE",
        "REFUND",
        "DEMO_REQUEST",
        "ad.click",
    ];
    let mut posts: Vec<LeadPost> = (0..150)
        .map(|i| LeadPost {
            id: format!("lv-{i:03}"),
            lead: format!("lead-{:02}", (i * 7) % 15),
            event_type: types[(i * 5 + i / 4) % types.len()],
            at: t0 + chrono::Duration::minutes((i as i64 * 37) % 1500),
        })
        .collect();
    post_leads(&pipeline, &posts).await?;
    // Posted again: duplicates change nothing.
    post_leads(&pipeline, &posts[..30]).await?;
    let expected = expected_leads(&posts);
    let snapshot = board_order(&expected);
    score_until(&api, &snapshot).await?;

    // Page 1 of 4 leads; then scores change: the last lead jumps to the top and the first falls
    // to the bottom. The pagination under way continues after page 1's last lead, by its place
    // in the live order.
    let (first_lead, last_lead) = (
        snapshot[0].0.clone(),
        snapshot[snapshot.len() - 1].0.clone(),
    );
    let first = body(
        &api.handle(get("/v1/leads", &[("limit", "4")], READ_KEY))
            .await,
    )?;
    let mut seen = lead_rows(&first)?;
    let later = Utc::now() - chrono::Duration::minutes(5);
    let mut changes: Vec<LeadPost> = (0..12)
        .map(|i| LeadPost {
            id: format!("lw-{i:02}"),
            lead: if i < 10 {
                first_lead.clone()
            } else {
                last_lead.clone()
            },
            event_type: if i < 10 { "REFUND" } else { "PURCHASE" },
            at: later + chrono::Duration::seconds(i),
        })
        .collect();
    // Enough purchases to top the board.
    let top_score = snapshot[0].1;
    for i in 0..(top_score / 100 + 1) {
        changes.push(LeadPost {
            id: format!("lx-{i:02}"),
            lead: last_lead.clone(),
            event_type: "PURCHASE",
            at: later + chrono::Duration::seconds(30 + i),
        });
    }
    post_leads(&pipeline, &changes).await?;
    posts.extend(changes);
    let changed = board_order(&expected_leads(&posts));
    ensure!(
        changed[0].0 == last_lead,
        "the change must reorder the board"
    );
    score_until(&api, &changed).await?;

    let mut cursor = first["nextCursor"].as_str().map(str::to_owned);
    while let Some(c) = cursor {
        let page = body(
            &api.handle(get(
                "/v1/leads",
                &[("limit", "4"), ("cursor", &c)],
                READ_KEY,
            ))
            .await,
        )?;
        seen.extend(lead_rows(&page)?);
        cursor = page["nextCursor"].as_str().map(str::to_owned);
    }
    let shown_first: Vec<(String, i64)> = seen
        .iter()
        .take(4)
        .map(|(_, id, s, _)| (id.clone(), *s))
        .collect();
    assert_eq!(shown_first, snapshot[..4].to_vec());
    let (last_id, last_score) = &snapshot[3];
    let want: Vec<(String, i64)> = shown_first
        .into_iter()
        .chain(
            changed
                .iter()
                .filter(|(id, s)| {
                    (std::cmp::Reverse(*s), id) > (std::cmp::Reverse(*last_score), last_id)
                })
                .cloned(),
        )
        .collect();
    let got: Vec<(String, i64)> = seen.iter().map(|(_, id, s, _)| (id.clone(), *s)).collect();
    assert_eq!(got, want);
    assert_eq!(
        first["leads"][0]["email"],
        format!("{first_lead}@example.com")
    );

    // One lead: an event processed but not yet scored already counts, with its points.
    let lead = snapshot[3].0.clone();
    let fresh = LeadPost {
        id: "ly-0".into(),
        lead: lead.clone(),
        event_type: "DEMO_REQUEST",
        at: Utc::now() - chrono::Duration::minutes(1),
    };
    post_leads(&pipeline, std::slice::from_ref(&fresh)).await?;
    posts.push(fresh);
    let expected = expected_leads(&posts);
    let (score, count, recent) = &expected[&lead];
    let found = body(
        &api.handle(get(&format!("/v1/leads/{lead}"), &[], READ_KEY))
            .await,
    )?;
    assert_eq!(found["score"], *score, "{found}");
    assert_eq!(found["eventCount"], *count, "{found}");
    assert_eq!(found["profile"]["email"], format!("{lead}@example.com"));
    let shown: Vec<(String, i64)> = found["recentEvents"]
        .as_array()
        .context("recentEvents")?
        .iter()
        .map(|e| {
            Ok((
                e["eventId"].as_str().context("eventId")?.to_owned(),
                e["points"].as_i64().context("points")?,
            ))
        })
        .collect::<Result<_>>()?;
    assert_eq!(shown, recent.iter().take(50).cloned().collect::<Vec<_>>());
    let counts: u64 = found["eventCounts"]
        .as_object()
        .context("eventCounts")?
        .values()
        .filter_map(Value::as_u64)
        .sum();
    assert_eq!(counts, *count);
    let missing = api.handle(get("/v1/leads/nobody", &[], READ_KEY)).await;
    assert_eq!(missing.status, 404);
    consumer.poller.stop().await;
    Ok(())
}
