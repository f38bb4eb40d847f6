//! Local-stack figures for the README: cold starts (median of 10) and peak memory of each
//! function as the Runtime API emulator reports them, release binary sizes, and the sustained
//! throughput of the whole pipeline (HTTP → ingest → SQS → process → DynamoDB) under the traffic
//! generator.
//!
//! Run: `cargo bench -p tally-local --bench stack` (env `RATE`, `SECONDS`, `BATCH` tune the load;
//! by default 1,000 events/s for 60 s in batches of 100).

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::Value;
use tally_local::invoke::Invoker;
use tally_local::publish::{publish, verify, PublishOptions, Summary};
use tally_local::runtime::{FunctionSpec, Runtimes};
use tally_local::up::{
    LocalStack, UpOptions, LOCAL_ADMIN_KEY, LOCAL_INGEST_KEY, LOCAL_TIKTOK_SECRET,
};

const COLD_STARTS: usize = 10;

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(f64::NAN)
}

async fn cold_starts(
    name: &str,
    binary: std::path::PathBuf,
    env: &[(&str, &str)],
    event: Value,
) -> Result<(f64, f64, u64)> {
    let mut inits = Vec::new();
    let mut durations = Vec::new();
    let mut memory = Vec::new();
    for _ in 0..COLD_STARTS {
        let mut spec = FunctionSpec::new(name, binary.clone());
        spec.memory_mb = 256;
        spec.timeout = Duration::from_secs(30);
        spec.env = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let runtimes = Runtimes::start(vec![spec])?;
        runtimes
            .invoke(name, event.clone())
            .await
            .map_err(|e| anyhow::anyhow!("{name}: {e}"))?;
        let report = runtimes.reports().pop().context("no report")?;
        inits.push(
            report
                .init_duration
                .context("cold start without init duration")?
                .as_secs_f64()
                * 1000.0,
        );
        durations.push(report.duration.as_secs_f64() * 1000.0);
        memory.push(report.max_memory_mb);
        runtimes.shutdown().await;
    }
    memory.sort_unstable();
    Ok((median(inits), median(durations), memory[memory.len() / 2]))
}

#[tokio::main]
async fn main() -> Result<()> {
    let root = tally_local::repo_root();
    let status =
        std::process::Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
            .args([
                "build",
                "--release",
                "--locked",
                "--bin",
                "ingest",
                "--bin",
                "process",
            ])
            .current_dir(&root)
            .status()?;
    if !status.success() {
        bail!("release build failed");
    }
    let target =
        std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root.join("target"), Into::into);
    let release = target.join("release");

    println!("release binaries:");
    for name in ["ingest", "process"] {
        let size = std::fs::metadata(release.join(name))?.len();
        println!("  {name:<8} {:.1} MiB", size as f64 / (1024.0 * 1024.0));
    }

    let handshake: Value = serde_json::from_str(&std::fs::read_to_string(
        root.join("events/webhook-facebook-verify.json"),
    )?)?;
    let ingest_env = [
        ("WORK_QUEUE_URL", "http://127.0.0.1:9/queue"),
        ("ANALYTICS_TABLE", "analytics"),
        ("FACEBOOK_APP_SECRET", "sample-facebook-app-secret"),
        ("FACEBOOK_VERIFY_TOKEN", "sample-verify-token"),
        ("AWS_ACCESS_KEY_ID", "test"),
        ("AWS_SECRET_ACCESS_KEY", "test"),
    ];
    let process_env = [
        ("EVENTS_TABLE", "events"),
        ("ANALYTICS_TABLE", "analytics"),
        ("WORK_QUEUE_URL", "http://127.0.0.1:9/queue"),
        ("AWS_ACCESS_KEY_ID", "test"),
        ("AWS_SECRET_ACCESS_KEY", "test"),
    ];
    println!(
        "cold starts (median of {COLD_STARTS}, release, as the emulator's REPORT lines give them):"
    );
    let (init, duration, memory) = cold_starts(
        "ingest",
        release.join("ingest"),
        &ingest_env,
        handshake.clone(),
    )
    .await?;
    println!(
        "  ingest   init {init:.1} ms, first invocation {duration:.1} ms, max memory {memory} MB (secrets inline)"
    );
    // As deployed: the secrets in Secrets Manager (moto here), read on the first request.
    let emulators = tally_local::emulators()?;
    let secret_arn =
        aws_sdk_secretsmanager::Client::new(&tally_local::sdk_config(&emulators.moto_endpoint))
            .create_secret()
            .name(format!("bench-{}", uuid::Uuid::new_v4().simple()))
            .secret_string(
                serde_json::json!({
                    "facebookAppSecret": "sample-facebook-app-secret",
                    "facebookVerifyToken": "sample-verify-token"
                })
                .to_string(),
            )
            .send()
            .await?
            .arn
            .context("secret ARN")?;
    let secret_env = [
        ("WORK_QUEUE_URL", "http://127.0.0.1:9/queue"),
        ("ANALYTICS_TABLE", "analytics"),
        ("SECRETS_ARN", secret_arn.as_str()),
        (
            "AWS_ENDPOINT_URL_SECRETS_MANAGER",
            emulators.moto_endpoint.as_str(),
        ),
        ("AWS_REGION", tally_local::REGION),
        ("AWS_ACCESS_KEY_ID", "test"),
        ("AWS_SECRET_ACCESS_KEY", "test"),
    ];
    let (init, duration, memory) =
        cold_starts("ingest", release.join("ingest"), &secret_env, handshake).await?;
    println!(
        "  ingest   init {init:.1} ms, first invocation {duration:.1} ms (reads the secret), max memory {memory} MB (secrets in Secrets Manager)"
    );
    let empty = serde_json::json!({"Records": []});
    let (init, duration, memory) =
        cold_starts("process", release.join("process"), &process_env, empty).await?;
    println!(
        "  process  init {init:.1} ms, first invocation {duration:.1} ms, max memory {memory} MB"
    );

    let rate = env_u64("RATE", 1000) as u32;
    let seconds = env_u64("SECONDS", 60);
    let batch = env_u64("BATCH", 100) as u32;
    let stack = LocalStack::start(UpOptions {
        release: true,
        ..UpOptions::new(root.join("template.yaml"))
    })
    .await?;
    let api = format!("http://{}", stack.api_addr);
    let options = PublishOptions {
        api: api.clone(),
        ingest_key: LOCAL_INGEST_KEY.into(),
        tiktok_secret: LOCAL_TIKTOK_SECRET.into(),
        rate,
        duration: Duration::from_secs(seconds),
        leads: 3000,
        batch,
        duplicates: 0.05,
        late: 0.05,
        seed: 1,
        max_in_flight: 32,
    };
    let before = Summary::read(&reqwest::Client::new(), &api, LOCAL_ADMIN_KEY).await?;
    // Every report from now on (the runtime keeps only the last 10,000).
    let mut subscription = stack.runtimes().subscribe();
    let started = Instant::now();
    let report = publish(&options).await?;
    let found = verify(
        &api,
        LOCAL_ADMIN_KEY,
        &before,
        started,
        &report,
        Duration::from_secs(900),
    )
    .await?;
    println!("pipeline (release, offered {rate} events/s for {seconds} s, batches of {batch}):");
    println!(
        "  HTTP: {} requests ({} failed), {:.0} requests/s, {:.0} events/s accepted",
        report.requests,
        report.failed_requests,
        report.requests_per_second(),
        report.accepted as f64 / report.elapsed.as_secs_f64()
    );
    println!("  {}", found.summary(&report));
    let statuses: Vec<_> = stack
        .runtimes()
        .functions()
        .into_iter()
        .map(|f| (f.clone(), stack.runtimes().status(&f).unwrap_or_default()))
        .collect();
    let mut reports = Vec::new();
    while let Ok(report) = subscription.try_recv() {
        reports.push(report);
    }
    stack.stop().await;
    println!("  execution environments (cold starts under the load, init median):");
    for (function, status) in statuses {
        if status.invocations == 0 {
            continue;
        }
        let mut inits: Vec<f64> = reports
            .iter()
            .filter(|r| r.function == function)
            .filter_map(|r| r.init_duration)
            .map(|d| d.as_secs_f64() * 1000.0)
            .collect();
        let cold = inits.len();
        inits.sort_by(f64::total_cmp);
        println!(
            "    {function:<20} peak {} at once, {} environments started, {} invocations during the run, {cold} cold starts (init median {:.1} ms)",
            status.peak_busy,
            status.environments_started,
            reports.iter().filter(|r| r.function == function).count(),
            median(inits),
        );
    }
    if !found.exactly_once {
        bail!("not every accepted event was stored exactly once: {found:?}");
    }
    Ok(())
}
