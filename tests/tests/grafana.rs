//! The Grafana dashboard (`grafana/tally-dashboard.json`) against what `GET /metrics` serves on
//! the emulators: every metric a panel queries has samples once the pipeline has seen traffic,
//! and request times by route are summed over the stored shards.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use serde_json::{json, Value};
use tally::auth::ApiKeys;
use tally::aws::DynamoLatencies;
use tally::http::HttpRequest;
use tally::query::QueryApi;
use tally::request_latency::LatencyBuffer;
use tally_tests::pipeline::{query_ports, Pipeline, SAMPLE_INGEST_KEY};
use tally_tests::{repo_root, sdk_config};

const READ_KEY: &str = "grafana-read-key";

/// Every `tally_*` name in a PromQL expression.
fn metric_names(expr: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = expr;
    while let Some(at) = rest.find("tally_") {
        let name: String = rest[at..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        rest = &rest[at + name.len()..];
        names.push(name);
    }
    names
}

/// The names of the sample lines of a Prometheus text exposition.
fn served_samples(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| l.split(['{', ' ']).next())
        .map(str::to_owned)
        .collect()
}

#[tokio::test]
async fn every_metric_the_dashboard_queries_is_served() -> Result<()> {
    let path = repo_root().join("grafana").join("tally-dashboard.json");
    let dashboard: Value = serde_json::from_str(&std::fs::read_to_string(&path)?)
        .with_context(|| format!("{} is not JSON", path.display()))?;
    ensure!(dashboard["uid"].is_string() && dashboard["title"].is_string());
    let panels = dashboard["panels"].as_array().context("panels")?;
    let mut queried = BTreeSet::new();
    for panel in panels.iter().filter(|p| p["type"] != "row") {
        let targets = panel["targets"]
            .as_array()
            .context("a panel without targets")?;
        ensure!(!targets.is_empty(), "{}", panel["title"]);
        ensure!(
            panel["datasource"]["uid"] == "${datasource}",
            "{} does not use the dashboard's data source",
            panel["title"]
        );
        for target in targets {
            let expr = target["expr"].as_str().context("a target without expr")?;
            let names = metric_names(expr);
            ensure!(!names.is_empty(), "{expr} queries no Tally metric");
            queried.extend(names);
        }
    }

    // Traffic: two sources, a poison event that fails every delivery, and query requests.
    let p = Pipeline::start("grafana", &["poison-1"]).await?;
    let batch = json!([
        {"eventId": "g-1", "type": "PAGE_VIEW", "source": "web"},
        {"eventId": "g-2", "type": "PURCHASE", "revenue": {"amount": "5.00"}},
        {"eventId": "poison-1", "type": "DEMO_REQUEST"},
    ]);
    let posted = p
        .post(
            HttpRequest::new("POST", "/v1/events/batch")
                .with_bearer(SAMPLE_INGEST_KEY)
                .with_json(batch.to_string()),
        )
        .await;
    ensure!(posted.status == 202, "{}", posted.body);
    p.drain().await?;

    let dynamodb = sdk_config(&p.stack.dynamodb_endpoint);
    let analytics = p.stack.table("AnalyticsTable")?.to_owned();
    // Each request's time is stored at once, each time on a random shard.
    let api = QueryApi::new(
        ApiKeys::parse(&format!("{}:read", ApiKeys::digest(READ_KEY)))
            .map_err(anyhow::Error::msg)?,
        query_ports(&p.stack)?,
    )
    .with_latencies(LatencyBuffer::new(
        Arc::new(DynamoLatencies::new(&dynamodb, analytics)),
        Duration::ZERO,
    ));
    let report = HttpRequest::new("GET", "/v1/reports/events")
        .with_query(&[("from", "2026-01-01"), ("to", "2026-01-02")])
        .with_bearer(READ_KEY);
    for _ in 0..6 {
        let answered = api.handle(report.clone()).await;
        ensure!(answered.status == 200, "{}", answered.body);
    }
    let metrics = HttpRequest::new("GET", "/metrics").with_bearer(READ_KEY);
    api.handle(metrics.clone()).await;
    let text = api.handle(metrics).await.body;

    let served = served_samples(&text);
    for name in &queried {
        ensure!(
            served.contains(name),
            "the dashboard queries {name}, of which /metrics serves no sample:\n{text}"
        );
    }
    for line in [
        "tally_events_processed_by_source_total{source=\"web\"} 1",
        "tally_events_processed_by_source_total{source=\"api\"} 1",
        "tally_http_request_duration_seconds_count{route=\"GET /v1/reports/events\"} 6",
        "tally_http_request_duration_seconds_count{route=\"GET /metrics\"} 1",
    ] {
        ensure!(text.lines().any(|l| l == line), "{line} missing:\n{text}");
    }
    let failed = format!(
        "tally_events_failed_by_source_total{{source=\"api\"}} {}",
        p.max_receive_count
    );
    ensure!(
        text.lines().any(|l| l == failed),
        "{failed} missing:\n{text}"
    );
    Ok(())
}
