//! The whole local stack under a burst, with several execution environments per function and
//! several SQS pollers: concurrent consumers still store every event once, and the aggregates
//! and scores the streams build from them still count each event once.

use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use chrono::DurationRound;
use serde_json::{json, Value};
use tally_local::up::{LocalStack, UpOptions, LOCAL_ADMIN_KEY, LOCAL_INGEST_KEY, LOCAL_READ_KEY};

const REQUESTS: usize = 24;
const EVENTS_PER_REQUEST: usize = 100;
const LEADS: usize = 40;

async fn get(stack: &LocalStack, path: &str, key: &str) -> Result<Value> {
    let response = reqwest::Client::new()
        .get(format!("http://{}{path}", stack.api_addr))
        .bearer_auth(key)
        .send()
        .await?;
    let status = response.status();
    let body: Value = response.json().await.unwrap_or(Value::Null);
    ensure!(status.is_success(), "GET {path}: {status} {body}");
    Ok(body)
}

async fn wait_until<T>(
    what: &str,
    limit: Duration,
    mut check: impl AsyncFnMut() -> Result<Option<T>>,
) -> Result<T> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(done) = check().await? {
            return Ok(done);
        }
        if Instant::now() > deadline {
            bail!("timed out after {limit:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// The template's stack, with 2 s rollup windows so that aggregates show up quickly.
async fn start_stack() -> Result<LocalStack> {
    LocalStack::start(UpOptions {
        parameters: vec![("RollupWindowSeconds".into(), "2".into())],
        ..UpOptions::new(tally_local::repo_root().join("template.yaml"))
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_consumers_store_aggregate_and_score_each_event_once() -> Result<()> {
    let stack = start_stack().await?;
    let now = chrono::Utc::now();
    let at = now.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    // Every tenth event repeats the id of one sent in an earlier request.
    let mut requests = Vec::new();
    let mut distinct: BTreeMap<String, (String, usize)> = BTreeMap::new();
    for r in 0..REQUESTS {
        let events: Vec<Value> = (0..EVENTS_PER_REQUEST)
            .map(|i| {
                let n = if r > 0 && i % 10 == 0 {
                    (r - 1) * EVENTS_PER_REQUEST + i + 1
                } else {
                    r * EVENTS_PER_REQUEST + i
                };
                let kind = if n % 3 == 0 {
                    "EMAIL_OPEN"
                } else {
                    "PAGE_VIEW"
                };
                let lead = n % LEADS;
                distinct.insert(format!("burst-{n}"), (kind.to_owned(), lead));
                json!({"eventId": format!("burst-{n}"), "type": kind, "timestamp": at,
                       "leadId": format!("burst-lead-{lead}"), "campaignId": "burst"})
            })
            .collect();
        requests.push(events);
    }
    let posts = requests.into_iter().map(|events| {
        let url = format!("http://{}/v1/events/batch", stack.api_addr);
        async move {
            let response = reqwest::Client::new()
                .post(url)
                .bearer_auth(LOCAL_INGEST_KEY)
                .json(&events)
                .send()
                .await?;
            let body: Value = response.json().await?;
            anyhow::Ok(body["accepted"].as_u64().unwrap_or(0))
        }
    });
    let accepted: u64 = futures::future::try_join_all(posts).await?.iter().sum();
    assert_eq!(accepted, (REQUESTS * EVENTS_PER_REQUEST) as u64);
    let repeats = accepted - distinct.len() as u64;

    // Stored once each: the counters moved by exactly the distinct events and the repeats.
    let summary = wait_until(
        "every event settled",
        Duration::from_secs(240),
        async || {
            let metrics = get(&stack, "/v1/admin/metrics", LOCAL_ADMIN_KEY).await?;
            let s = &metrics["summary"];
            let settled =
                s["processed"].as_u64().unwrap_or(0) + s["duplicates"].as_u64().unwrap_or(0);
            Ok((settled >= accepted).then(|| s.clone()))
        },
    )
    .await?;
    assert_eq!(summary["processed"], json!(distinct.len()), "{summary}");
    assert_eq!(summary["duplicates"], json!(repeats), "{summary}");
    assert_eq!(summary["failed"], json!(0), "{summary}");

    // The work really was shared: ingest and process each ran in several environments at once.
    let process = stack
        .runtimes()
        .status("ProcessFunction")
        .context("process")?;
    assert!(
        process.peak_busy >= 2,
        "process ran {} at once",
        process.peak_busy
    );
    let ingest = stack
        .runtimes()
        .status("IngestFunction")
        .context("ingest")?;
    assert!(
        ingest.peak_busy >= 2,
        "ingest ran {} at once",
        ingest.peak_busy
    );
    let started: HashSet<u64> = stack
        .runtimes()
        .reports()
        .iter()
        .filter(|r| r.function == "ProcessFunction")
        .map(|r| r.environment)
        .collect();
    assert!(started.len() >= 2, "process environments {started:?}");

    // Aggregated once each: the hour's counts per type equal the distinct events.
    let hour = now.duration_trunc(chrono::Duration::hours(1))?;
    let path = format!(
        "/v1/aggregations?window=hour&start={}&end={}&campaignId=burst",
        hour.timestamp_millis(),
        (hour + chrono::Duration::hours(1)).timestamp_millis()
    );
    let mut want: BTreeMap<String, u64> = BTreeMap::new();
    for (kind, _) in distinct.values() {
        *want.entry(kind.clone()).or_default() += 1;
    }
    wait_until(
        "the hour's aggregates",
        Duration::from_secs(120),
        async || {
            let body = get(&stack, &path, LOCAL_READ_KEY).await?;
            let got: BTreeMap<String, u64> = body["buckets"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|b| {
                    (
                        b["type"].as_str().unwrap_or_default().to_owned(),
                        b["count"].as_u64().unwrap_or(0),
                    )
                })
                .collect();
            Ok((got == want).then_some(()))
        },
    )
    .await?;

    // Scored once each: every lead's event counts and score are those of its distinct events.
    for lead in 0..LEADS {
        let mine: Vec<&String> = distinct
            .values()
            .filter(|(_, l)| *l == lead)
            .map(|(kind, _)| kind)
            .collect();
        let opens = mine.iter().filter(|k| k.as_str() == "EMAIL_OPEN").count() as u64;
        let views = mine.len() as u64 - opens;
        let path = format!("/v1/leads/burst-lead-{lead}");
        let found = wait_until(&path, Duration::from_secs(60), async || {
            let body = get(&stack, &path, LOCAL_READ_KEY).await?;
            let counts = (
                body["eventCounts"]["EMAIL_OPEN"].as_u64().unwrap_or(0),
                body["eventCounts"]["PAGE_VIEW"].as_u64().unwrap_or(0),
            );
            Ok((counts == (opens, views)).then_some(body))
        })
        .await?;
        assert_eq!(found["score"], json!(opens * 10 + views * 5), "{found}");
    }
    stack.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seeding_posts_history_through_the_http_api() -> Result<()> {
    use tally_local::seed::{seed_over_http, SeedOptions};
    let stack = start_stack().await?;
    let options = SeedOptions {
        days: 2,
        events_per_day: 150,
        ..SeedOptions::default()
    };
    let api = format!("http://{}", stack.api_addr);
    let report = seed_over_http(&api, LOCAL_INGEST_KEY, &options).await?;
    assert_eq!(report.events, 300);
    assert!(
        report.to - report.from > chrono::Duration::hours(47),
        "{report:?}"
    );

    // Real traffic: the pipeline counters count it, and the reports see the two days.
    let metrics = wait_until(
        "300 events processed",
        Duration::from_secs(120),
        async || {
            let metrics = get(&stack, "/v1/admin/metrics", LOCAL_ADMIN_KEY).await?;
            let s = &metrics["summary"];
            Ok((s["processed"].as_u64() == Some(300)).then(|| s.clone()))
        },
    )
    .await?;
    assert_eq!(metrics["accepted"], json!(300), "{metrics}");
    let path = format!(
        "/v1/reports/events?from={}&to={}",
        report.from.format("%Y-%m-%d"),
        report.to.format("%Y-%m-%d")
    );
    wait_until(
        "the two days in the events report",
        Duration::from_secs(120),
        async || {
            let body = get(&stack, &path, LOCAL_READ_KEY).await?;
            Ok((body["total"].as_u64() == Some(300)).then_some(()))
        },
    )
    .await?;
    stack.stop().await;
    Ok(())
}
