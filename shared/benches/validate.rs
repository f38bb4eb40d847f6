//! Validation + normalisation throughput on a 500-event batch, on one core, against plain
//! `serde_json` parsing of the same bytes into `serde_json::Value`.
//!
//! Run: `cargo bench -p tally-shared --bench validate`

use std::hint::black_box;
use std::time::{Duration, Instant};

use chrono::{SecondsFormat, Utc};
use serde_json::{json, Value};
use tally::event::{normalize, Limits, NormalizeContext};

const EVENTS: usize = 500;

/// A realistic mix: canonical lead events, accepted spellings, and publisher-format events.
fn batch() -> Vec<u8> {
    let now = Utc::now();
    let events: Vec<Value> = (0..EVENTS)
        .map(|i| {
            let ts = (now - chrono::Duration::seconds(i as i64)).to_rfc3339_opts(SecondsFormat::Millis, true);
            match i % 4 {
                0 => json!({
                    "eventId": format!("evt-{i}"), "type": "PURCHASE", "timestamp": ts, "source": "web",
                    "lead": {"email": format!("lead{}@example.com", i % 97), "name": "Ann Lee", "company": "Acme"},
                    "campaignId": format!("c{}", i % 20), "regionId": "eu-west", "funnelStage": "bottom",
                    "revenue": {"amount": "49.90", "currency": "EUR"},
                    "user": {"age": 34, "gender": "female", "country": "DE", "city": "Berlin", "followers": 2400},
                    "payload": {"orderId": format!("o-{i}"), "sku": "PRO"}
                }),
                1 => json!({
                    "eventType": "PAGE_VIEW", "occurredAt": now.timestamp_millis() - i as i64,
                    "payload": {"userId": format!("u{i}"), "campaignId": "c7", "funnelStage": "top", "url": "/pricing"}
                }),
                2 => json!({
                    "event_type": "DEMO_REQUEST", "timestamp": ts,
                    "metadata": {"email": format!("Lead{i}@Example.com"), "name": "Bo", "company": "Fox"}
                }),
                _ => json!({
                    "eventId": format!("tt-{i}"), "timestamp": ts, "source": "tiktok", "funnelStage": "middle",
                    "eventType": "ad.click",
                    "data": {
                        "user": {"userId": format!("t{i}"), "age": 27, "gender": "male",
                                 "location": {"country": "Germany", "city": "Berlin"}, "followers": 15200},
                        "engagement": {"campaignId": "tt-7", "purchaseAmount": "19.99", "likes": 12}
                    }
                }),
            }
        })
        .collect();
    serde_json::to_vec(&events).unwrap_or_default()
}

/// Runs `f` repeatedly for about `budget`; returns batches per second.
fn rate(budget: Duration, mut f: impl FnMut() -> usize) -> f64 {
    for _ in 0..20 {
        black_box(f());
    }
    let started = Instant::now();
    let mut rounds = 0u64;
    while started.elapsed() < budget {
        black_box(f());
        rounds += 1;
    }
    rounds as f64 / started.elapsed().as_secs_f64()
}

fn main() {
    let bytes = batch();
    let ctx = NormalizeContext {
        received_at: Utc::now(),
        limits: Limits::default(),
        default_source: "api",
    };
    let parse_only = || match serde_json::from_slice::<Value>(&bytes) {
        Ok(Value::Array(items)) => items.len(),
        _ => 0,
    };
    let full = || {
        let Ok(Value::Array(items)) = serde_json::from_slice::<Value>(&bytes) else {
            return 0;
        };
        items
            .into_iter()
            .filter_map(|item| normalize(item, &ctx).ok())
            .filter_map(|event| event.to_canonical_json().ok())
            .count()
    };
    assert_eq!(full(), EVENTS, "every benchmark event must be valid");

    let budget = Duration::from_secs(3);
    let parse_rate = rate(budget, parse_only) * EVENTS as f64;
    let full_rate = rate(budget, full) * EVENTS as f64;
    println!("batch: {EVENTS} events, {} bytes", bytes.len());
    println!(
        "serde_json::Value parse only:           {:>10.0} events/s",
        parse_rate
    );
    println!(
        "parse + validate + normalise + encode:  {:>10.0} events/s",
        full_rate
    );
    println!(
        "ratio (full / parse only):              {:>10.2}",
        full_rate / parse_rate
    );
}
