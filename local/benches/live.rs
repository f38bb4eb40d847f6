//! Real-time scoring on the local stack (release build): the time from ingest's `202` to the
//! event's lead on the leaderboard (`GET /v1/leads`, polled every 20 ms), and to its
//! `lead.stage_changed` event at an HTTP endpoint (the template's webhook rule, pointed at a
//! receiver in the bench).
//!
//! Each sample posts one `PURCHASE` for a new lead, so the lead appears on the board with 100
//! points only once its event went through ingest → SQS → process → the events table → its
//! stream → the rollup's scoring → the lead item and its leaderboard index entry. Its 100 points
//! cross `MQL`, so the same write publishes a stage change: bus → rule → API destination →
//! receiver. Samples are spaced so that each meets an idle pipeline, as a lone event does.
//!
//! Run: `cargo bench -p tally-local --bench live` (env `SAMPLES`, default 60).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Result};
use serde_json::{json, Value};
use tally_local::up::{LocalStack, UpOptions, LOCAL_INGEST_KEY, LOCAL_READ_KEY};

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted
        .get(rank.clamp(1, sorted.len()) - 1)
        .copied()
        .unwrap_or(f64::NAN)
}

#[tokio::main]
async fn main() -> Result<()> {
    let samples: usize = std::env::var("SAMPLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(60);
    // The webhook's receiver: when each lead's stage change arrived.
    let arrivals: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let seen = arrivals.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |body: String| {
            let seen = seen.clone();
            async move {
                let change: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
                if let Some(lead) = change["leadId"].as_str() {
                    let mut seen = seen.lock().unwrap_or_else(|p| p.into_inner());
                    seen.entry(lead.to_owned()).or_insert_with(Instant::now);
                }
                "ok"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0))).await?;
    let hook = format!("http://{}/hook", listener.local_addr()?);
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    let stack = LocalStack::start(UpOptions {
        release: true,
        parameters: vec![("StageWebhookUrl".into(), hook)],
        ..UpOptions::new(tally_local::repo_root().join("template.yaml"))
    })
    .await?;
    let base = format!("http://{}", stack.api_addr);
    let client = reqwest::Client::new();
    let run = format!("{:x}", chrono::Utc::now().timestamp_millis());
    let mut latencies = Vec::with_capacity(samples);
    let mut accepted_at: HashMap<String, Instant> = HashMap::new();
    for i in 0..samples {
        let lead = format!("live-{run}-{i:03}");
        let posted = client
            .post(format!("{base}/v1/events"))
            .bearer_auth(LOCAL_INGEST_KEY)
            .json(&json!({"type": "PURCHASE", "leadId": lead}))
            .send()
            .await?;
        let accepted = Instant::now();
        ensure!(
            posted.status() == 202,
            "ingest answered {}",
            posted.status()
        );
        accepted_at.insert(lead.clone(), accepted);
        loop {
            let board: Value = client
                .get(format!("{base}/v1/leads?limit=100"))
                .bearer_auth(LOCAL_READ_KEY)
                .send()
                .await?
                .json()
                .await?;
            let shown = board["leads"].as_array().is_some_and(|rows| {
                rows.iter()
                    .any(|r| r["leadId"] == lead && r["score"] == 100)
            });
            if shown {
                latencies.push(accepted.elapsed().as_secs_f64());
                break;
            }
            if accepted.elapsed() > Duration::from_secs(60) {
                bail!("{lead} never reached the leaderboard");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        tokio::time::sleep(Duration::from_millis(700)).await;
    }
    latencies.sort_by(f64::total_cmp);
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut deliveries = loop {
        let seen = arrivals.lock().unwrap_or_else(|p| p.into_inner()).clone();
        if seen.len() >= samples || Instant::now() > deadline {
            break seen
                .iter()
                .filter_map(|(lead, at)| {
                    accepted_at
                        .get(lead)
                        .map(|sent| at.duration_since(*sent).as_secs_f64())
                })
                .collect::<Vec<f64>>();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    ensure!(
        deliveries.len() == samples,
        "{} of {samples} stage changes reached the endpoint",
        deliveries.len()
    );
    deliveries.sort_by(f64::total_cmp);
    println!(
        "202 to the stage change at the webhook over {samples} events: p50 {:.2} s, p95 {:.2} s, max {:.2} s",
        percentile(&deliveries, 50.0),
        percentile(&deliveries, 95.0),
        percentile(&deliveries, 100.0)
    );
    println!(
        "202 to leaderboard over {samples} events (release, default template settings): p50 {:.2} s, p95 {:.2} s, max {:.2} s",
        percentile(&latencies, 50.0),
        percentile(&latencies, 95.0),
        percentile(&latencies, 100.0)
    );
    stack.stop().await;
    Ok(())
}
