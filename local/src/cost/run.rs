//! The reference workload: the local stack with every caller metered, `publish`'s traffic in
//! one profile after the other, and the pipeline left to settle (stored, rolled up, scored,
//! archived) before each profile's units are read.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use futures::StreamExt as _;
use serde_yaml::Value as Yaml;

use super::{prices, Architecture, Bill};
use crate::functions::EventDef;
use crate::meter::classify::Service;
use crate::meter::{Meter, MeteringProxy, Unit, Upstream, Usage};
use crate::publish::{publish, verify, PublishOptions, Summary};
use crate::up::{LocalStack, UpOptions, LOCAL_ADMIN_KEY, LOCAL_INGEST_KEY, LOCAL_TIKTOK_SECRET};

/// The caller name of the clients' requests to the HTTP API.
pub const CLIENTS: &str = "clients";

/// How clients post.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Profile {
    /// One event per request (`POST /v1/events`).
    Single,
    /// 100 events per request (`POST /v1/events/batch`).
    Batch,
}

impl Profile {
    pub fn name(self) -> &'static str {
        match self {
            Profile::Single => "single-event clients",
            Profile::Batch => "batch clients (100 events a request)",
        }
    }

    fn events_per_request(self) -> u32 {
        match self {
            Profile::Single => 1,
            Profile::Batch => 100,
        }
    }
}

#[derive(Debug, Clone)]
pub struct CostOptions {
    pub template: PathBuf,
    pub release: bool,
    /// Events posted per profile.
    pub events: u32,
    /// Events per second offered.
    pub rate: u32,
    /// The rollup stream mapping's tumbling window, seconds (the template's
    /// `RollupWindowSeconds`): longer windows write aggregates less often.
    pub rollup_window: u32,
    pub architecture: Architecture,
    pub profiles: Vec<Profile>,
}

/// Runs each profile in turn on one metered local stack and bills it.
pub async fn run(options: &CostOptions) -> Result<Vec<Bill>> {
    if options.events == 0 || options.rate == 0 {
        bail!("events and rate must be positive");
    }
    let meter = Meter::default();
    let mut up = UpOptions::new(options.template.clone());
    up.release = options.release;
    up.meter = Some(meter.clone());
    // Schedules (reconcile, decay) cost by the hour, not by the event.
    up.schedules = false;
    up.parameters = vec![(
        "RollupWindowSeconds".into(),
        options.rollup_window.to_string(),
    )];
    let stack = LocalStack::start(up).await?;
    let result = measure(options, &stack, &meter).await;
    stack.stop().await;
    result
}

async fn measure(options: &CostOptions, stack: &LocalStack, meter: &Meter) -> Result<Vec<Bill>> {
    let template = std::fs::read_to_string(&options.template)?;
    // Each request writes one line (and its newline) to the access log group.
    let access_log_line = access_log_line(&template)?.map_or(0, |l| l.len() + 1);
    let functions: Vec<String> = stack
        .functions
        .iter()
        .map(|f| f.logical_id.clone())
        .collect();
    // Lambda bills the duration rounded up to the millisecond, and (for a custom runtime) the
    // init phase of a cold start.
    let mut reports = stack.runtimes().subscribe();
    let lambda_meter = meter.clone();
    let collector = tokio::spawn(async move {
        while let Some(report) = reports.next().await {
            let memory_gb = f64::from(report.memory_size_mb) / 1024.0;
            let init_ms = report.init_duration.map_or(0, |d| d.as_millis() as u64);
            let billed_ms = report.billed_duration_ms() + init_ms;
            lambda_meter.record(
                &report.function,
                [
                    (Unit::LambdaRequests, 1.0),
                    (Unit::LambdaGbSeconds, billed_ms as f64 / 1000.0 * memory_gb),
                    (Unit::XRayTraces, prices::XRAY_SAMPLED),
                ],
            );
        }
    });
    let gateway = MeteringProxy::start(
        CLIENTS,
        Upstream {
            service: Service::HttpApi,
            endpoint: format!("http://{}", stack.api_addr),
        },
        meter.clone(),
    )
    .await?;
    // The pipeline counters are read through the admin route, whose function is then not part
    // of what an event costs.
    let reader = stack
        .functions
        .iter()
        .find(|f| {
            f.events
                .iter()
                .any(|e| matches!(e, EventDef::HttpApi { path, .. } if path == "/v1/admin/metrics"))
        })
        .map(|f| f.logical_id.clone());
    let api = format!("http://{}", stack.api_addr);
    let client = reqwest::Client::new();
    // Quiet for longer than any stream mapping gathers or windows (the archive's gathers for
    // 10 s), so the last batch of every consumer is counted.
    let longest_window = stack
        .functions
        .iter()
        .flat_map(|f| &f.events)
        .filter_map(|e| match e {
            EventDef::DynamoDb(s) => {
                Some(s.batching_window.max(s.tumbling_window.unwrap_or_default()))
            }
            _ => None,
        })
        .max()
        .unwrap_or_default()
        .max(Duration::from_secs(u64::from(options.rollup_window)));
    let settle = longest_window + Duration::from_secs(5);
    let mut bills = Vec::new();
    for (i, profile) in options.profiles.iter().enumerate() {
        let before = usage(meter, stack, &functions);
        let counters = Summary::read(&client, &api, LOCAL_ADMIN_KEY).await?;
        let started = Instant::now();
        let report = publish(&PublishOptions {
            api: gateway.endpoint.clone(),
            ingest_key: LOCAL_INGEST_KEY.into(),
            tiktok_secret: LOCAL_TIKTOK_SECRET.into(),
            rate: options.rate,
            duration: Duration::from_secs_f64(f64::from(options.events) / f64::from(options.rate)),
            leads: 3000,
            batch: profile.events_per_request(),
            duplicates: 0.05,
            late: 0.05,
            seed: i as u64 + 1,
            max_in_flight: 32,
        })
        .await?;
        let check = verify(
            &api,
            LOCAL_ADMIN_KEY,
            &counters,
            started,
            &report,
            Duration::from_secs(600),
        )
        .await?;
        if report.failed_requests > 0 {
            bail!(
                "{}: {} of {} requests failed",
                profile.name(),
                report.failed_requests,
                report.requests
            );
        }
        if !check.exactly_once {
            bail!(
                "{}: the pipeline did not store every accepted event exactly once: {}",
                profile.name(),
                check.summary(&report)
            );
        }
        wait_until_quiet(meter, settle).await;
        let mut used = usage(meter, stack, &functions).since(&before);
        if let Some(reader) = &reader {
            used = used.without(|caller, _| caller == reader);
        }
        let requests = used.total(&Unit::ApiRequests);
        used.add(
            CLIENTS,
            Unit::AccessLogBytes,
            requests * access_log_line as f64,
        );
        bills.push(Bill::new(
            profile.name(),
            report.accepted,
            &used,
            options.architecture,
        ));
    }
    collector.abort();
    Ok(bills)
}

/// What the meter counted, plus every function's log bytes so far.
fn usage(meter: &Meter, stack: &LocalStack, functions: &[String]) -> Usage {
    let mut usage = meter.snapshot();
    for function in functions {
        if let Some(status) = stack.runtimes().status(function) {
            usage.add(function, Unit::LambdaLogBytes, status.log_bytes as f64);
        }
    }
    usage
}

/// Waits until nothing new is billed for `quiet` (every stream consumer has gathered, windowed
/// and caught up), or ten minutes. Idle polling goes on regardless.
async fn wait_until_quiet(meter: &Meter, quiet: Duration) {
    let deadline = Instant::now() + Duration::from_secs(600);
    let busy = || {
        meter
            .snapshot()
            .without(|_, unit| *unit == Unit::SqsEmptyReceives)
    };
    let mut last = busy();
    let mut since = Instant::now();
    while since.elapsed() < quiet && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let now = busy();
        if now != last {
            last = now;
            since = Instant::now();
        }
    }
}

/// Sample values of the access log's `$context` variables, for the size of one line.
const CONTEXT_SAMPLES: &[(&str, &str)] = &[
    ("$context.requestId", "Xb7c9hRvoAMEbXg="),
    ("$context.identity.sourceIp", "203.0.113.17"),
    ("$context.requestTime", "06/Dec/2026:04:20:00 +0000"),
    ("$context.httpMethod", "POST"),
    ("$context.routeKey", "POST /v1/events/batch"),
    ("$context.status", "202"),
    ("$context.protocol", "HTTP/1.1"),
    ("$context.responseLength", "4512"),
    ("$context.responseLatency", "23"),
    ("$context.integrationLatency", "21"),
    ("$context.integrationErrorMessage", "-"),
];

/// One access log line of the template's HTTP API, with sample values; `None` without access
/// logs.
pub fn access_log_line(template: &str) -> Result<Option<String>> {
    let doc: Yaml = serde_yaml::from_str(template).context("parsing the template")?;
    let format = doc["Resources"]
        .as_mapping()
        .into_iter()
        .flatten()
        .find(|(_, r)| r["Type"].as_str() == Some("AWS::Serverless::HttpApi"))
        .and_then(|(_, r)| r["Properties"]["AccessLogSettings"]["Format"].as_str());
    let Some(format) = format else {
        return Ok(None);
    };
    let mut line = format.to_owned();
    // Longest names first: `$context.requestId` is a prefix of no other, but
    // `$context.status` could be of a longer one.
    let mut samples = CONTEXT_SAMPLES.to_vec();
    samples.sort_by_key(|(name, _)| std::cmp::Reverse(name.len()));
    for (name, sample) in samples {
        line = line.replace(name, sample);
    }
    Ok(Some(line))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn access_log_lines_are_sized_from_the_template() {
        let template =
            std::fs::read_to_string(crate::repo_root().join("template.yaml")).unwrap_or_default();
        let line = access_log_line(&template)
            .ok()
            .flatten()
            .unwrap_or_default();
        // Every variable replaced by its sample, none left over.
        assert!(!line.is_empty() && !line.contains("$context"), "{line}");
        assert!(
            line.contains("\"routeKey\":\"POST /v1/events/batch\""),
            "{line}"
        );
        assert_eq!(access_log_line("Resources: {}\n").ok(), Some(None));
    }
}
