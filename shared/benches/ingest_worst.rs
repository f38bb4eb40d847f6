//! The worst one request can cost `ingest`: for each route, the largest body it accepts (or
//! must read before refusing), CPU time and peak memory of one request, without the SQS calls
//! (the queue here accepts everything at once).
//!
//! Each route runs in a child process of this bench (logging off), so that its peak resident memory
//! (`VmHWM`) is its own; the figure given is the peak over the child's memory just before the
//! request (which already holds the request body, as Lambda's runtime would). CPU time is the
//! median of 5 runs on one thread.
//!
//! Run: `cargo bench -p tally-shared --bench ingest_worst` (Linux: reads `/proc/self/status`).

use std::io::Write;
use std::time::Instant;

use async_trait::async_trait;
use chrono::Utc;
use flate2::{write::GzEncoder, Compression};
use serde_json::{json, Value};
use tally::auth::ApiKeys;
use tally::config::{FacebookConfig, IngestConfig};
use tally::counters::{CounterDelta, CounterSink};
use tally::event::Limits;
use tally::http::HttpRequest;
use tally::ingest::Ingest;
use tally::queue::{EventQueue, OutboundMessage, SendReport};
use tally::signature::{sign_facebook, sign_timestamped, WebhookSecrets};
use tally::store::StoreError;

struct Queue;

#[async_trait]
impl EventQueue for Queue {
    async fn send(&self, messages: &[OutboundMessage]) -> SendReport {
        std::hint::black_box(messages.len());
        SendReport::default()
    }
}

struct Counters;

#[async_trait]
impl CounterSink for Counters {
    async fn add(&self, _: &CounterDelta) -> Result<(), StoreError> {
        Ok(())
    }
    async fn totals(&self) -> Result<CounterDelta, StoreError> {
        Ok(CounterDelta::default())
    }
}

const KEY: &str = "bench-ingest-key";
const SECRETS: [&str; 3] = ["shop-secret-a", "shop-secret-b", "shop-secret-c"];

fn ingest() -> Result<Ingest<Queue, Counters>, String> {
    let config = IngestConfig {
        work_queue_url: "q".into(),
        analytics_table: "a".into(),
        api_keys: ApiKeys::parse(&format!("{}:ingest", ApiKeys::digest(KEY)))?,
        facebook: Some(FacebookConfig {
            app_secret: "fb-secret".into(),
            verify_token: "t".into(),
        }),
        tiktok_secret: Some("tt-secret".into()),
        webhook_secrets: WebhookSecrets::parse(&SECRETS.map(|s| format!("shop={s}")).join(","))?,
        counted_sources: Default::default(),
        limits: Limits::default(),
    };
    Ok(Ingest::new(config, Queue, Counters))
}

fn request(path: &str, headers: &[(&str, String)], body: Vec<u8>) -> HttpRequest {
    let mut r = HttpRequest::new("POST", path);
    for (k, v) in headers {
        r = r.with_header(k, v.clone());
    }
    r.body = body;
    r
}

/// A valid event of about `bytes` serialized.
fn event(i: usize, bytes: usize) -> Value {
    json!({
        "eventId": format!("worst-{i}"), "type": "PURCHASE", "source": "web",
        "lead": {"email": format!("lead{i}@example.com"), "name": "Ann", "company": "Acme"},
        "campaignId": "c1", "regionId": "r1", "funnelStage": "bottom",
        "revenue": {"amount": "49.90", "currency": "EUR"},
        "user": {"age": 34, "gender": "f", "country": "DE", "city": "Berlin", "followers": 10},
        "payload": {"blob": "x".repeat(bytes.saturating_sub(400))}
    })
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut enc = GzEncoder::new(Vec::new(), Compression::default());
    let _ = enc.write_all(data);
    enc.finish().unwrap_or_default()
}

const MIB: usize = 1024 * 1024;

/// (route label, what the body is, the request)
fn case(name: &str) -> Option<(&'static str, String, HttpRequest)> {
    let auth = ("authorization", format!("Bearer {KEY}"));
    let now = Utc::now().timestamp();
    Some(match name {
        "single" => {
            // The largest body read: 1 MiB, parsed, then refused as over 32 KiB.
            let body = serde_json::to_vec(&event(0, MIB - 1024)).ok()?;
            (
                "POST /v1/events",
                format!(
                    "{} KiB, one event (refused: over 32 KiB)",
                    body.len() / 1024
                ),
                request("/v1/events", &[auth], body),
            )
        }
        "batch" => {
            let events: Vec<Value> = (0..500).map(|i| event(i, 10_400)).collect();
            let body = serde_json::to_vec(&events).ok()?;
            (
                "POST /v1/events/batch",
                format!(
                    "{:.1} MiB, 500 events of 10 KB",
                    body.len() as f64 / MIB as f64
                ),
                request("/v1/events/batch", &[auth], body),
            )
        }
        "batch-gzip" => {
            let events: Vec<Value> = (0..500).map(|i| event(i, 10_400)).collect();
            let body = gzip(&serde_json::to_vec(&events).ok()?);
            (
                "POST /v1/events/batch (gzip)",
                format!("{} KiB gzip of 5 MiB, 500 events", body.len() / 1024),
                request(
                    "/v1/events/batch",
                    &[auth, ("content-encoding", "gzip".into())],
                    body,
                ),
            )
        }
        "ndjson" => {
            let body: Vec<u8> = (0..500)
                .flat_map(|i| {
                    let mut line = serde_json::to_vec(&event(i, 10_400)).unwrap_or_default();
                    line.push(b'\n');
                    line
                })
                .collect();
            (
                "POST /v1/events/batch (NDJSON)",
                format!("{:.1} MiB, 500 lines", body.len() as f64 / MIB as f64),
                request(
                    "/v1/events/batch",
                    &[auth, ("content-type", "application/x-ndjson".into())],
                    body,
                ),
            )
        }
        "csv" => {
            let mut body = b"eventId,type,timestamp,source,leadId,email,name,company,userId,campaignId,regionId,funnelStage,revenue,currency\n".to_vec();
            for i in 0..10_000 {
                let row = format!(
                    "csv-{i},PURCHASE,,web,,lead{i}@example.com,{},{},u{i},c{},r1,bottom,49.90,EUR\n",
                    "N".repeat(250),
                    "C".repeat(190),
                    i % 20
                );
                body.extend_from_slice(row.as_bytes());
            }
            (
                "POST /v1/events/csv",
                format!("{:.1} MiB, 10,000 rows", body.len() as f64 / MIB as f64),
                request(
                    "/v1/events/csv",
                    &[auth, ("content-type", "text/csv".into())],
                    body,
                ),
            )
        }
        "facebook" => {
            let changes: Vec<Value> = (0..500)
                .map(|i| json!({"field": "leadgen", "value": {"leadgen_id": format!("{i}"), "page_id": "1", "form_id": "2", "ad_id": "3", "created_time": now, "extra": "x".repeat(1900)}}))
                .collect();
            let body = serde_json::to_vec(
                &json!({"object": "page", "entry": [{"id": "1", "time": now, "changes": changes}]}),
            )
            .ok()?;
            let signature = sign_facebook("fb-secret", &body);
            (
                "POST /v1/webhooks/facebook",
                format!("{} KiB, 500 leadgen changes", body.len() / 1024),
                request(
                    "/v1/webhooks/facebook",
                    &[("x-hub-signature-256", signature)],
                    body,
                ),
            )
        }
        "tiktok" => {
            let events: Vec<Value> = (0..500)
                .map(|i| json!({"eventId": format!("t{i}"), "source": "tiktok", "eventType": "ad.click", "data": {"user": {"userId": format!("u{i}"), "location": {"country": "Germany"}}, "engagement": {"campaignId": "c", "note": "x".repeat(1800)}}}))
                .collect();
            let body = serde_json::to_vec(&events).ok()?;
            let signature = sign_timestamped("tt-secret", "s", now, &body);
            (
                "POST /v1/webhooks/tiktok",
                format!("{} KiB, 500 events", body.len() / 1024),
                request(
                    "/v1/webhooks/tiktok",
                    &[("tiktok-signature", signature)],
                    body,
                ),
            )
        }
        "generic" => {
            let events: Vec<Value> = (0..500).map(|i| event(i, 1_900)).collect();
            let body = serde_json::to_vec(&events).ok()?;
            // Five values (the most accepted), the match last, three secrets configured: the
            // body is hashed once per secret.
            let good = sign_timestamped(SECRETS[2], "v1", now, &body);
            let mac = good
                .rsplit_once("v1=")
                .map(|(_, m)| m.to_owned())
                .unwrap_or_default();
            let wrong = "0".repeat(64);
            let header = format!("t={now},v1={wrong},v1={wrong},v1={wrong},v1={wrong},v1={mac}");
            (
                "POST /v1/webhooks/{source}",
                format!(
                    "{} KiB, 500 events, 5 signatures, 3 secrets",
                    body.len() / 1024
                ),
                request("/v1/webhooks/shop", &[("x-signature", header)], body),
            )
        }
        "forged" => {
            // Without a secret: the most an attacker can make it do before the 403.
            let body = vec![b' '; MIB];
            let wrong = "0".repeat(64);
            let header = format!("t={now},v1={wrong},v1={wrong},v1={wrong},v1={wrong},v1={wrong}");
            (
                "POST /v1/webhooks/{source} (forged)",
                "1 MiB, 5 wrong signatures".into(),
                request("/v1/webhooks/shop", &[("x-signature", header)], body),
            )
        }
        _ => return None,
    })
}

const CASES: [&str; 9] = [
    "single",
    "batch",
    "batch-gzip",
    "ndjson",
    "csv",
    "facebook",
    "tiktok",
    "generic",
    "forged",
];

/// `VmRSS` or `VmHWM` of this process, KiB.
fn status_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// Child: one route; prints `<status> <median ms> <peak KiB over the RSS before>`.
fn child(name: &str) -> Result<(), String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let ingest = ingest()?;
    let (_, _, request) = case(name).ok_or("unknown case")?;
    let before = status_kib("VmRSS:");
    let first = runtime.block_on(ingest.handle(request.clone()));
    let peak = status_kib("VmHWM:").saturating_sub(before);
    let mut times = Vec::new();
    for _ in 0..5 {
        let r = request.clone();
        let started = Instant::now();
        std::hint::black_box(runtime.block_on(ingest.handle(r)));
        times.push(started.elapsed());
    }
    times.sort();
    // Marked: the function's EMF metrics go to stdout too.
    println!(
        "RESULT {} {:.1} {peak}",
        first.status,
        times[2].as_secs_f64() * 1000.0
    );
    Ok(())
}

fn main() -> Result<(), String> {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--case") {
        return child(args.get(i + 1).ok_or("--case needs a name")?);
    }
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    println!("ingest, worst case per request (one core; CPU = median of 5; memory = peak RSS over the process before the request):");
    println!("| route | body | answer | CPU ms | peak MiB |");
    println!("|---|---|---|---|---|");
    for name in CASES {
        let (route, body, _) = case(name).ok_or("unknown case")?;
        let output = std::process::Command::new(&exe)
            .args(["--case", name])
            .output()
            .map_err(|e| e.to_string())?;
        let text = String::from_utf8_lossy(&output.stdout);
        let fields: Vec<&str> = text
            .lines()
            .find_map(|l| l.strip_prefix("RESULT "))
            .unwrap_or_default()
            .split_whitespace()
            .collect();
        let peak_mib = fields
            .get(2)
            .and_then(|k| k.parse::<f64>().ok())
            .map_or(f64::NAN, |k| k / 1024.0);
        println!(
            "| `{route}` | {body} | {} | {} | {peak_mib:.1} |",
            fields.first().unwrap_or(&"?"),
            fields.get(1).unwrap_or(&"?"),
        );
    }
    Ok(())
}
