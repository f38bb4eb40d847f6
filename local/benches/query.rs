//! Query figures for the README: p50/p95 latency of each query route over HTTP on the local stack
//! (release binaries) with a month of seeded history, rolled up, reconciled and scored; and what
//! each query costs in DynamoDB (requests and read units), measured by calling the same query code
//! in-process against the same tables.
//!
//! Run: `cargo bench -p tally-local --bench query` (env `DAYS` (30), `EVENTS_PER_DAY` (3000),
//! `SAMPLES` (50 per route)).

use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use chrono::{DurationRound, Utc};
use serde_json::{json, Value};
use tally::auth::ApiKeys;
use tally::config::QueryConfig;
use tally::http::HttpRequest;
use tally::query::QueryApi;
use tally::request_cost::RequestCost;
use tally_local::invoke::Invoker;
use tally_local::seed::{seed, SeedOptions};
use tally_local::up::{LocalStack, UpOptions, LOCAL_READ_KEY};

const ROLLUP: &str = "RollupFunction";
/// A route's query parameters.
type Params = Vec<(&'static str, String)>;
/// Short windows and settle period, so a month seeded in minutes is rolled up and reconciled
/// within the run (production: 300 s and 1,200 s).
const WINDOW_SECONDS: u64 = 10;
const SETTLE_SECONDS: u64 = 75;

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let rank = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len().max(1));
    sorted.get(rank - 1).copied().unwrap_or(f64::NAN)
}

async fn invoke(stack: &LocalStack, task: Value) -> Result<Value> {
    stack
        .runtimes()
        .invoke(ROLLUP, task.clone())
        .await
        .map_err(|e| anyhow::anyhow!("{task}: {e}"))
}

#[tokio::main]
async fn main() -> Result<()> {
    let days = env_u64("DAYS", 30) as u32;
    let events_per_day = env_u64("EVENTS_PER_DAY", 3_000) as u32;
    let samples = env_u64("SAMPLES", 50) as usize;
    let stack = LocalStack::start(UpOptions {
        release: true,
        parameters: vec![
            ("RollupWindowSeconds".into(), WINDOW_SECONDS.to_string()),
            ("RollupSettleSeconds".into(), SETTLE_SECONDS.to_string()),
            // Latency is measured, not the API's throttling.
            ("ApiRateLimit".into(), "1000000".into()),
            ("ApiBurstLimit".into(), "1000000".into()),
        ],
        ..UpOptions::new(tally_local::repo_root().join("template.yaml"))
    })
    .await?;
    let result = run(&stack, days, events_per_day, samples).await;
    stack.stop().await;
    result
}

async fn run(stack: &LocalStack, days: u32, events_per_day: u32, samples: usize) -> Result<()> {
    let sdk = tally_local::sdk_config(&stack.stack.dynamodb_endpoint);
    let moto = tally_local::sdk_config(&stack.stack.moto_endpoint);
    let options = SeedOptions {
        days,
        events_per_day,
        ..SeedOptions::default()
    };
    let seeded = seed(&sdk, stack.stack.table("EventsTable")?, &options).await?;
    println!(
        "seeded {} events over {days} days in {:.1} s ({:.0} events/s)",
        seeded.events,
        seeded.elapsed.as_secs_f64(),
        seeded.events as f64 / seeded.elapsed.as_secs_f64()
    );

    // The same query code as the function, in-process, for the cost of each query.
    let config = QueryConfig {
        analytics_table: stack.stack.table("AnalyticsTable")?.to_owned(),
        events_table: stack.stack.table("EventsTable")?.to_owned(),
        work_queue_url: stack.stack.queue("WorkQueue")?.url.clone(),
        dead_letter_queue_url: stack.stack.queue("DeadLetterQueue")?.url.clone(),
        api_keys: ApiKeys::default(),
    };
    let api = QueryApi::new(
        ApiKeys::parse(&format!("{}:read", ApiKeys::digest(LOCAL_READ_KEY)))
            .map_err(anyhow::Error::msg)?,
        tally::aws::query_ports(&sdk, &moto, &config),
    );

    // Every seeded event rolled up by the stream's windows.
    let from = seeded.from.format("%Y-%m-%d").to_string();
    let to = seeded.to.format("%Y-%m-%d").to_string();
    let report = HttpRequest::new("GET", "/v1/reports/events")
        .with_query(&[("from", from.as_str()), ("to", to.as_str())])
        .with_bearer(LOCAL_READ_KEY);
    let started = Instant::now();
    loop {
        let response = api.handle(report.clone()).await;
        let total = serde_json::from_str::<Value>(&response.body)?["total"].as_u64();
        if total == Some(seeded.events) {
            break;
        }
        if started.elapsed() > Duration::from_secs(900) {
            bail!("rolled up {total:?} of {} events", seeded.events);
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    println!("rolled up within {:.0} s", started.elapsed().as_secs_f64());

    // Past days compacted with their daily summaries, as the hourly schedule leaves them.
    tokio::time::sleep(Duration::from_secs(SETTLE_SECONDS + 5)).await;
    let reconciled = invoke(stack, json!({"task": "reconcile", "days": days + 1})).await?;
    let written = reconciled["days"]
        .as_array()
        .map_or(0, |d| d.iter().filter(|d| d["written"] == true).count());
    println!("reconciled: {written} days compacted");

    let now = Utc::now();
    let month_start = (now - chrono::Duration::days(i64::from(days)))
        .duration_trunc(chrono::Duration::hours(1))?
        .to_rfc3339();
    let day_start = (now - chrono::Duration::days(1))
        .duration_trunc(chrono::Duration::hours(1))?
        .to_rfc3339();
    let end = now.to_rfc3339();
    let month = [("start", month_start.as_str()), ("end", end.as_str())];
    let dates = [("from", from.as_str()), ("to", to.as_str())];
    let with = |base: &[(&'static str, &str)], extra: &[(&'static str, &'static str)]| -> Params {
        base.iter()
            .chain(extra)
            .map(|(k, v)| (*k, (*v).to_owned()))
            .collect()
    };
    let first_page = api
        .handle(
            HttpRequest::new("GET", "/v1/leads")
                .with_query(&[("limit", "20")])
                .with_bearer(LOCAL_READ_KEY),
        )
        .await;
    let cursor = serde_json::from_str::<Value>(&first_page.body)?["nextCursor"]
        .as_str()
        .context("a second leaderboard page")?
        .to_owned();
    let queries: Vec<(&str, &str, Params)> = vec![
        (
            "aggregations, day, 30 days",
            "/v1/aggregations",
            with(&month, &[("window", "day")]),
        ),
        (
            "aggregations, day, 30 days, one campaign",
            "/v1/aggregations",
            with(&month, &[("window", "day"), ("campaignId", "web-c3")]),
        ),
        (
            "aggregations, hour, 24 hours",
            "/v1/aggregations",
            with(
                &[("start", day_start.as_str()), ("end", end.as_str())],
                &[("window", "hour")],
            ),
        ),
        (
            "top 10 campaigns by count, 30 days",
            "/v1/aggregations/top",
            with(&month, &[("metric", "count"), ("dimension", "campaignId")]),
        ),
        (
            "top 10 campaigns by revenue, 30 days",
            "/v1/aggregations/top",
            with(
                &month,
                &[
                    ("metric", "revenue"),
                    ("dimension", "campaignId"),
                    ("type", "PURCHASE"),
                ],
            ),
        ),
        (
            "events report, 30 days",
            "/v1/reports/events",
            with(&dates, &[]),
        ),
        (
            "revenue report, 30 days",
            "/v1/reports/revenue",
            with(&dates, &[]),
        ),
        (
            "demographics report, 30 days",
            "/v1/reports/demographics",
            with(&dates, &[]),
        ),
        (
            "leaderboard, first page of 20",
            "/v1/leads",
            with(&[("limit", "20")], &[]),
        ),
        (
            "leaderboard, next page",
            "/v1/leads",
            vec![("limit", "20".into()), ("cursor", cursor)],
        ),
        (
            "one lead",
            "/v1/leads/email%3Alead7%40example.com",
            Vec::new(),
        ),
        ("rules", "/v1/rules", Vec::new()),
        ("metrics", "/metrics", Vec::new()),
        ("health/ready", "/health/ready", Vec::new()),
    ];

    let client = reqwest::Client::new();
    let base = format!("http://{}", stack.api_addr);
    println!(
        "\n{} events over {days} days; {samples} requests per route over HTTP (release)\n",
        seeded.events
    );
    println!("| query | p50 ms | p95 ms | DynamoDB requests | read units |");
    println!("|---|---|---|---|---|");
    for (name, path, query) in &queries {
        let pairs: Vec<(&str, &str)> = query.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let request = HttpRequest::new("GET", path)
            .with_query(&pairs)
            .with_bearer(LOCAL_READ_KEY);
        let (response, cost) = RequestCost::measure(api.handle(request)).await;
        ensure!(response.status == 200, "{name}: {}", response.body);

        let url = reqwest::Url::parse_with_params(&format!("{base}{path}"), &pairs)?;
        let mut latencies = Vec::with_capacity(samples);
        for i in 0..samples + 3 {
            let sent = Instant::now();
            let response = client
                .get(url.clone())
                .bearer_auth(LOCAL_READ_KEY)
                .send()
                .await?;
            let status = response.status();
            response.bytes().await?;
            ensure!(status.is_success(), "{name}: {status}");
            if i >= 3 {
                latencies.push(sent.elapsed().as_secs_f64() * 1000.0);
            }
        }
        latencies.sort_by(f64::total_cmp);
        println!(
            "| {name} | {:.1} | {:.1} | {} | {:.1} |",
            percentile(&latencies, 0.5),
            percentile(&latencies, 0.95),
            cost.requests,
            cost.read_units
        );
    }
    Ok(())
}
