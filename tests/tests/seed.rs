//! `tally-local up --seed-days`: the seeded history is stored once per event, spread evenly over
//! the days asked for, and flows through the real stream rollup into what the query routes read.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use serde_json::Value;
use tally::auth::ApiKeys;
use tally::http::HttpRequest;
use tally::query::QueryApi;
use tally_local::seed::{seed, SeedOptions};
use tally_tests::pipeline::query_ports;
use tally_tests::stream::consume;
use tally_tests::{sdk_config, Stack};

const READ_KEY: &str = "seed-read-key";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn seeded_days_are_stored_once_and_rolled_up() -> Result<()> {
    let stack = Stack::provision("seed_days").await?;
    let _rollup = consume(&stack, false).await?;
    let options = SeedOptions {
        days: 3,
        events_per_day: 40,
        leads: 10,
        seed: 7,
    };
    let report = seed(
        &sdk_config(&stack.dynamodb_endpoint),
        stack.table("EventsTable")?,
        &options,
    )
    .await?;
    assert_eq!(report.events, 120);
    let span = report.to - report.from;
    assert!(
        span > chrono::Duration::days(3) - chrono::Duration::hours(1)
            && span <= chrono::Duration::days(3),
        "{report:?}"
    );

    // A second seed writes new events: ids never collide with the first run's.
    let again = seed(
        &sdk_config(&stack.dynamodb_endpoint),
        stack.table("EventsTable")?,
        &SeedOptions {
            days: 1,
            events_per_day: 10,
            ..options
        },
    )
    .await?;
    assert_eq!(again.events, 10);

    let api = QueryApi::new(
        ApiKeys::parse(&format!("{}:read", ApiKeys::digest(READ_KEY)))
            .map_err(anyhow::Error::msg)?,
        query_ports(&stack)?,
    );
    let aggregations = HttpRequest::new("GET", "/v1/aggregations")
        .with_query(&[
            ("window", "day"),
            ("start", report.from.to_rfc3339().as_str()),
            ("end", report.to.to_rfc3339().as_str()),
        ])
        .with_bearer(READ_KEY);
    // The rollup's 2 s windows flush every event within seconds.
    let deadline = Instant::now() + Duration::from_secs(60);
    let per_day = loop {
        let response = api.handle(aggregations.clone()).await;
        ensure!(response.status == 200, "{}", response.body);
        let found: Value = serde_json::from_str(&response.body)?;
        let mut per_day: BTreeMap<String, u64> = BTreeMap::new();
        for bucket in found["buckets"].as_array().context("buckets")? {
            *per_day
                .entry(bucket["windowStart"].as_str().context("day")?.to_owned())
                .or_default() += bucket["count"].as_u64().context("count")?;
        }
        if per_day.values().sum::<u64>() == 130 || Instant::now() > deadline {
            break per_day;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert_eq!(per_day.values().sum::<u64>(), 130, "{per_day:?}");
    // Every event falls on a UTC day of the span; the whole days inside it hold about 40 events
    // each. (The partial days at its ends may hold none: just after midnight, the last day is a
    // few minutes long, and empty buckets are omitted.)
    let (first, last) = (report.from.date_naive(), report.to.date_naive());
    let key = |day: chrono::NaiveDate| format!("{day}T00:00:00.000Z");
    for day in per_day.keys() {
        assert!(
            *day >= key(first) && *day <= key(last),
            "{day} outside {report:?}"
        );
    }
    let whole: Vec<chrono::NaiveDate> = first
        .iter_days()
        .skip(1)
        .take_while(|d| *d < last)
        .collect();
    // One or two, as the span starts just after midnight or not.
    assert!(
        !whole.is_empty(),
        "a three-day span holds a whole UTC day: {report:?}"
    );
    for day in whole {
        let count = per_day.get(&key(day)).copied().unwrap_or(0);
        assert!((40..=51).contains(&count), "{day}: {count} in {per_day:?}");
    }
    Ok(())
}
