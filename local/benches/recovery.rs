//! Recovery from a storage outage on the local stack: traffic flows, then every write of
//! `process` fails for `OUTAGE` seconds (fault injection: DynamoDB answers errors), then the
//! outage ends. Reports how long after its end every accepted event is stored, and that none
//! was lost or dead-lettered. Failed messages come back after the retry backoff (2, 4, 8 … s,
//! at most 60 s), not after the work queue's 360 s visibility timeout.
//!
//! Run: `cargo bench -p tally-local --bench recovery` (env `RATE`, `SECONDS`, `OUTAGE_AT`,
//! `OUTAGE` tune it; defaults 20 events/s for 60 s, the outage from 15 s for 30 s).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use serde_yaml::Value as Yaml;
use tally::aws::DynamoCounters;
use tally::counters::CounterSink;
use tally::faults::OUTAGE_FILE_ENV;
use tally_local::publish::{publish, PublishOptions};
use tally_local::up::{LocalStack, UpOptions, LOCAL_INGEST_KEY, LOCAL_TIKTOK_SECRET};

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The project's template, with `process` reading the outage file.
fn template(outage_file: &std::path::Path) -> Result<PathBuf> {
    let root = tally_local::repo_root();
    let mut doc: Yaml =
        serde_yaml::from_str(&std::fs::read_to_string(root.join("template.yaml"))?)?;
    let variables =
        &mut doc["Resources"]["ProcessFunction"]["Properties"]["Environment"]["Variables"];
    variables[OUTAGE_FILE_ENV] = Yaml::from(outage_file.display().to_string());
    let path = std::env::temp_dir().join(format!("tally-recovery-{}.yaml", std::process::id()));
    std::fs::write(&path, serde_yaml::to_string(&doc)?)?;
    Ok(path)
}

#[tokio::main]
async fn main() -> Result<()> {
    let rate = env_u64("RATE", 20) as u32;
    let seconds = env_u64("SECONDS", 60);
    let outage_at = Duration::from_secs(env_u64("OUTAGE_AT", 15));
    let outage = Duration::from_secs(env_u64("OUTAGE", 30));
    let outage_file =
        std::env::temp_dir().join(format!("tally-recovery-{}.outage", std::process::id()));
    let _ = std::fs::remove_file(&outage_file);
    let stack = LocalStack::start(UpOptions {
        release: true,
        cargo_features: vec!["process/faults".into()],
        ..UpOptions::new(template(&outage_file)?)
    })
    .await?;
    let counters = DynamoCounters::new(
        &tally_local::sdk_config(&stack.stack.dynamodb_endpoint),
        stack.stack.table("AnalyticsTable")?.to_owned(),
    );
    let options = PublishOptions {
        api: format!("http://{}", stack.api_addr),
        ingest_key: LOCAL_INGEST_KEY.into(),
        tiktok_secret: LOCAL_TIKTOK_SECRET.into(),
        rate,
        duration: Duration::from_secs(seconds),
        leads: 500,
        batch: 10,
        duplicates: 0.0,
        late: 0.0,
        seed: 7,
        max_in_flight: 16,
    };
    let started = Instant::now();
    let traffic = tokio::spawn(async move { publish(&options).await });

    tokio::time::sleep(outage_at).await;
    std::fs::write(&outage_file, b"down").context("starting the outage")?;
    let during = counters.totals().await?;
    tokio::time::sleep(outage).await;
    std::fs::remove_file(&outage_file).context("ending the outage")?;
    let ended = Instant::now();
    let failed_during = counters.totals().await?.failed - during.failed;

    let report = traffic.await.context("publisher")??;
    let deadline = Instant::now() + Duration::from_secs(900);
    let totals = loop {
        let totals = counters.totals().await?;
        if totals.processed + totals.duplicate >= report.accepted || Instant::now() > deadline {
            break totals;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let recovered = ended.elapsed();
    let traffic_end = started.elapsed().as_secs_f64() - recovered.as_secs_f64();
    println!(
        "recovery (release, {rate} events/s for {seconds} s; every write fails from {} s for {} s):",
        outage_at.as_secs(),
        outage.as_secs()
    );
    println!(
        "  accepted {}, stored {} (+{} duplicates), failed deliveries {} ({} during the outage), dead-lettered {}",
        report.accepted,
        totals.processed,
        totals.duplicate,
        totals.failed,
        failed_during,
        totals.dead_lettered
    );
    println!(
        "  every accepted event stored {:.1} s after the outage ended (traffic stopped {:.1} s after it ended)",
        recovered.as_secs_f64(),
        (traffic_end - (outage_at + outage).as_secs_f64()).max(0.0)
    );
    stack.stop().await;
    Ok(())
}
