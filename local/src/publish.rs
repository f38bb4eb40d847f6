//! `tally-local publish`: realistic traffic through the HTTP API. Publisher-format Facebook and
//! TikTok events across funnel stages (users, campaigns, purchases) and canonical lead events for
//! a few thousand leads, with a share of duplicates and late events.
//!
//! [`verify`] then checks through the admin metrics that every accepted event was stored exactly
//! once (each distinct accepted id processed once, every repeat counted as a duplicate), and
//! measures the rate from HTTP to stored.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use chrono::{SecondsFormat, Utc};
use serde_json::{json, Value};
use tally::signature::sign_timestamped;
use tokio::sync::Semaphore;

#[derive(Debug, Clone)]
pub struct PublishOptions {
    /// Base URL of the HTTP API, e.g. `http://127.0.0.1:3000`.
    pub api: String,
    pub ingest_key: String,
    /// Secret of `POST /v1/webhooks/tiktok`.
    pub tiktok_secret: String,
    /// Events per second.
    pub rate: u32,
    pub duration: Duration,
    pub leads: u32,
    /// Events per request: `/v1/events/batch`, or `/v1/events` for 1.
    pub batch: u32,
    /// Share of events that repeat an earlier `eventId` (0..1).
    pub duplicates: f64,
    /// Share of events stamped hours to days in the past (0..1).
    pub late: f64,
    pub seed: u64,
    pub max_in_flight: usize,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct PublishReport {
    pub requests: u64,
    pub failed_requests: u64,
    pub accepted: u64,
    pub rejected: u64,
    /// Distinct event ids among the accepted events.
    pub distinct_accepted: u64,
    /// Events sent again with an id already sent.
    pub duplicates_sent: u64,
    pub elapsed: Duration,
}

impl PublishReport {
    pub fn requests_per_second(&self) -> f64 {
        self.requests as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    pub fn events_per_second(&self) -> f64 {
        (self.accepted + self.rejected) as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

const CAMPAIGNS: u32 = 20;
const REGIONS: &[&str] = &["us-east", "us-west", "eu-west", "eu-central", "ap-south"];
const STAGES: &[&str] = &["top", "middle", "bottom"];
const COUNTRIES: &[&str] = &[
    "US",
    "DE",
    "FR",
    "GB",
    "BR",
    "IN",
    "Germany",
    "United States",
];
const GENDERS: &[&str] = &["female", "male", "non-binary"];
/// Canonical lead event types with their relative weights.
const LEAD_TYPES: &[(&str, u32)] = &[
    ("PAGE_VIEW", 40),
    ("EMAIL_OPEN", 25),
    ("FORM_SUBMISSION", 12),
    ("DEMO_REQUEST", 6),
    ("PURCHASE", 5),
    ("REFUND", 1),
];

/// Generates events; deterministic for a seed.
pub struct Generator {
    rng: fastrand::Rng,
    leads: u32,
    late: f64,
    duplicates: f64,
    sent: Vec<Value>,
    next_id: u64,
    run: String,
}

impl Generator {
    pub fn new(seed: u64, leads: u32, duplicates: f64, late: f64) -> Self {
        Self {
            rng: fastrand::Rng::with_seed(seed),
            leads: leads.max(1),
            late,
            duplicates,
            sent: Vec::new(),
            next_id: 0,
            run: format!("{seed:x}-{}", Utc::now().timestamp_millis()),
        }
    }

    /// The next event and whether it repeats an earlier one.
    pub fn next_event(&mut self) -> (Value, bool) {
        if !self.sent.is_empty() && self.rng.f64() < self.duplicates {
            let i = self.rng.usize(..self.sent.len());
            return (self.sent[i].clone(), true);
        }
        self.next_id += 1;
        let id = format!("gen-{}-{}", self.run, self.next_id);
        let event = match self.rng.u32(..10) {
            0..=1 => self.publisher_event(&id, "tiktok"),
            2..=3 => self.publisher_event(&id, "facebook"),
            _ => self.lead_event(&id),
        };
        if self.sent.len() < 10_000 {
            self.sent.push(event.clone());
        }
        (event, false)
    }

    fn timestamp(&mut self) -> String {
        let seconds_ago = if self.rng.f64() < self.late {
            // Late: an hour to 20 days ago (inside the 30-day window).
            self.rng.i64(3_600..20 * 86_400)
        } else {
            self.rng.i64(0..60)
        };
        (Utc::now() - chrono::Duration::seconds(seconds_ago))
            .to_rfc3339_opts(SecondsFormat::Millis, true)
    }

    fn publisher_event(&mut self, id: &str, source: &str) -> Value {
        let stage = STAGES[self.rng.usize(..STAGES.len())];
        let purchase = stage == "bottom" && self.rng.bool();
        let event_type = match (stage, purchase) {
            (_, true) => "PURCHASE",
            ("top", _) => "ad.impression",
            ("middle", _) => "ad.click",
            _ => "add_to_cart",
        };
        let mut engagement = json!({"campaignId": format!("{source}-c{}", self.rng.u32(..CAMPAIGNS)), "likes": self.rng.u32(..500)});
        if purchase {
            engagement["purchaseAmount"] = json!(format!(
                "{}.{:02}",
                self.rng.u32(5..300),
                self.rng.u32(..100)
            ));
        }
        json!({
            "eventId": id, "timestamp": self.timestamp(), "source": source, "funnelStage": stage, "eventType": event_type,
            "data": {
                "user": {
                    "userId": format!("{source}-u{}", self.rng.u32(..self.leads * 3)),
                    "age": self.rng.u8(13..80),
                    "gender": GENDERS[self.rng.usize(..GENDERS.len())],
                    "location": {"country": COUNTRIES[self.rng.usize(..COUNTRIES.len())], "city": "Springfield"},
                    "followers": self.rng.u64(..250_000)
                },
                "engagement": engagement
            }
        })
    }

    fn lead_event(&mut self, id: &str) -> Value {
        let total: u32 = LEAD_TYPES.iter().map(|(_, w)| w).sum();
        let mut pick = self.rng.u32(..total);
        let event_type = LEAD_TYPES
            .iter()
            .find(|(_, w)| {
                let hit = pick < *w;
                pick = pick.saturating_sub(*w);
                hit
            })
            .map_or("PAGE_VIEW", |(t, _)| t);
        let lead = self.rng.u32(..self.leads);
        let mut event = json!({
            "eventId": id, "type": event_type, "timestamp": self.timestamp(), "source": "web",
            "lead": {"email": format!("lead{lead}@example.com"), "name": format!("Lead {lead}"), "company": format!("Company {}", lead % 97)},
            "campaignId": format!("web-c{}", self.rng.u32(..CAMPAIGNS)),
            "regionId": REGIONS[self.rng.usize(..REGIONS.len())],
            "funnelStage": STAGES[self.rng.usize(..STAGES.len())],
            "payload": {"path": "/pricing"}
        });
        let amount = format!("{}.{:02}", self.rng.u32(10..500), self.rng.u32(..100));
        match event_type {
            "PURCHASE" => event["revenue"] = json!({"amount": amount, "currency": "USD"}),
            "REFUND" => {
                event["revenue"] = json!({"amount": format!("-{amount}"), "currency": "USD"})
            }
            _ => {}
        }
        event
    }
}

/// Posts events at `rate` per second for `duration`; TikTok events go through the signed
/// webhook, everything else through `/v1/events/batch`.
pub async fn publish(options: &PublishOptions) -> Result<PublishReport> {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(options.max_in_flight)
        .build()?;
    let mut generator = Generator::new(
        options.seed,
        options.leads,
        options.duplicates,
        options.late,
    );
    let batch = options.batch.max(1);
    let requests_per_second = (f64::from(options.rate) / f64::from(batch)).max(0.1);
    let mut ticker = tokio::time::interval(Duration::from_secs_f64(1.0 / requests_per_second));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let in_flight = Arc::new(Semaphore::new(options.max_in_flight.max(1)));
    let counters = Arc::new(Counters::default());
    let mut tasks = tokio::task::JoinSet::new();
    let mut duplicates_sent = 0;
    let started = Instant::now();
    while started.elapsed() < options.duration {
        ticker.tick().await;
        let mut events = Vec::new();
        let mut tiktok = Vec::new();
        for _ in 0..batch {
            let (event, duplicate) = generator.next_event();
            duplicates_sent += u64::from(duplicate);
            if event["source"] == "tiktok" {
                tiktok.push(event);
            } else {
                events.push(event);
            }
        }
        let permit = in_flight
            .clone()
            .acquire_owned()
            .await
            .context("semaphore")?;
        let (client, counters, options) = (client.clone(), counters.clone(), options.clone());
        tasks.spawn(async move {
            // A client of one event a request posts it alone, to the single-event routes.
            let single = options.batch == 1;
            if !events.is_empty() {
                let request = if single {
                    client
                        .post(format!("{}/v1/events", options.api))
                        .json(&events[0])
                } else {
                    client
                        .post(format!("{}/v1/events/batch", options.api))
                        .json(&events)
                };
                let request = request.bearer_auth(&options.ingest_key);
                counters.record(request.send().await).await;
            }
            if !tiktok.is_empty() {
                let body = match tiktok.len() {
                    1 if single => tiktok[0].to_string(),
                    _ => Value::Array(tiktok).to_string(),
                };
                let signature = sign_timestamped(
                    &options.tiktok_secret,
                    "s",
                    Utc::now().timestamp(),
                    body.as_bytes(),
                );
                let request = client
                    .post(format!("{}/v1/webhooks/tiktok", options.api))
                    .header("content-type", "application/json")
                    .header("tiktok-signature", signature)
                    .body(body);
                counters.record(request.send().await).await;
            }
            drop(permit);
        });
        while tasks.try_join_next().is_some() {}
    }
    while tasks.join_next().await.is_some() {}
    let distinct_accepted = counters
        .ids
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .len() as u64;
    Ok(PublishReport {
        requests: counters.requests.load(Ordering::Relaxed),
        failed_requests: counters.failed.load(Ordering::Relaxed),
        accepted: counters.accepted.load(Ordering::Relaxed),
        rejected: counters.rejected.load(Ordering::Relaxed),
        distinct_accepted,
        duplicates_sent,
        elapsed: started.elapsed(),
    })
}

#[derive(Default)]
struct Counters {
    requests: AtomicU64,
    failed: AtomicU64,
    accepted: AtomicU64,
    rejected: AtomicU64,
    /// Ids of the accepted events.
    ids: Mutex<HashSet<String>>,
}

impl Counters {
    async fn record(&self, response: reqwest::Result<reqwest::Response>) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        let body: Option<Value> = match response {
            Ok(r) if r.status().is_success() => r.json().await.ok(),
            Ok(r) => {
                tracing::warn!(status = %r.status(), "request failed");
                None
            }
            Err(e) => {
                tracing::warn!(error = %e, "request failed");
                None
            }
        };
        match body {
            // `POST /v1/events`: one event, `{"eventId", "status": "queued"}`.
            Some(b) if b["status"] == "queued" => {
                self.accepted.fetch_add(1, Ordering::Relaxed);
                if let Some(id) = b["eventId"].as_str() {
                    let mut ids = self.ids.lock().unwrap_or_else(PoisonError::into_inner);
                    ids.insert(id.to_owned());
                }
            }
            Some(b) => {
                self.accepted
                    .fetch_add(b["accepted"].as_u64().unwrap_or(0), Ordering::Relaxed);
                self.rejected
                    .fetch_add(b["rejected"].as_u64().unwrap_or(0), Ordering::Relaxed);
                let queued = b["results"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter(|r| r["status"] == "queued")
                    .filter_map(|r| r["eventId"].as_str());
                let mut ids = self.ids.lock().unwrap_or_else(PoisonError::into_inner);
                ids.extend(queued.map(str::to_owned));
            }
            None => {
                self.failed.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// The pipeline counters of `GET /v1/admin/metrics`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Summary {
    pub processed: u64,
    pub duplicates: u64,
    pub failed: u64,
    pub dead_letter: u64,
    pub rejected: u64,
}

impl Summary {
    pub async fn read(client: &reqwest::Client, api: &str, admin_key: &str) -> Result<Summary> {
        let url = format!("{api}/v1/admin/metrics");
        let response = client
            .get(&url)
            .bearer_auth(admin_key)
            .send()
            .await
            .with_context(|| format!("GET {url}"))?;
        let status = response.status();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        if !status.is_success() {
            anyhow::bail!("GET {url}: {status} {body}");
        }
        let n = |key: &str| body["summary"][key].as_u64().unwrap_or(0);
        Ok(Summary {
            processed: n("processed"),
            duplicates: n("duplicates"),
            failed: n("failed"),
            dead_letter: n("deadLetter"),
            rejected: n("rejected"),
        })
    }

    fn since(&self, before: &Summary) -> Summary {
        Summary {
            processed: self.processed.saturating_sub(before.processed),
            duplicates: self.duplicates.saturating_sub(before.duplicates),
            failed: self.failed.saturating_sub(before.failed),
            dead_letter: self.dead_letter.saturating_sub(before.dead_letter),
            rejected: self.rejected.saturating_sub(before.rejected),
        }
    }
}

/// What [`verify`] found.
#[derive(Debug, Clone, PartialEq)]
pub struct Verification {
    /// The counters' change since the publisher started.
    pub delta: Summary,
    /// From the publisher's start until the last accepted event was stored (or the wait ended).
    pub to_stored: Duration,
    /// Every distinct accepted id processed once, and every other accepted event a duplicate.
    pub exactly_once: bool,
}

impl Verification {
    /// One line: what was stored of what `report` accepted, and how fast.
    pub fn summary(&self, report: &PublishReport) -> String {
        format!(
            "stored {} and found {} duplicates of {} accepted ({} distinct) in {:.1} s from the first request: {:.0} events/s HTTP to stored; failed attempts {}, dead-lettered {}; exactly once: {}",
            self.delta.processed,
            self.delta.duplicates,
            report.accepted,
            report.distinct_accepted,
            self.to_stored.as_secs_f64(),
            self.stored_per_second(),
            self.delta.failed,
            self.delta.dead_letter,
            self.exactly_once,
        )
    }

    /// Events settled (stored or found to be duplicates) per second, from the first request.
    pub fn stored_per_second(&self) -> f64 {
        (self.delta.processed + self.delta.duplicates) as f64
            / self.to_stored.as_secs_f64().max(1e-9)
    }
}

/// Waits until the pipeline has settled every accepted event (at most `wait`, or 30 s without
/// progress), then compares the counters' change since `before` with what was accepted.
pub async fn verify(
    api: &str,
    admin_key: &str,
    before: &Summary,
    started: Instant,
    report: &PublishReport,
    wait: Duration,
) -> Result<Verification> {
    let client = reqwest::Client::new();
    let deadline = Instant::now() + wait;
    let mut last = Summary::read(&client, api, admin_key).await?.since(before);
    let mut last_progress = Instant::now();
    let mut settled_at = Instant::now();
    loop {
        let settled = last.processed + last.duplicates;
        if settled >= report.accepted
            || Instant::now() > deadline
            || last_progress.elapsed() > Duration::from_secs(30)
        {
            break;
        }
        // Once a second: the admin metrics read the counters and queues, which the pipeline
        // under test shares.
        tokio::time::sleep(Duration::from_secs(1)).await;
        let now = Summary::read(&client, api, admin_key).await?.since(before);
        if now != last {
            last_progress = Instant::now();
            settled_at = last_progress;
            last = now;
        }
    }
    Ok(Verification {
        delta: last,
        to_stored: settled_at.saturating_duration_since(started),
        exactly_once: last.processed == report.distinct_accepted
            && last.duplicates == report.accepted - report.distinct_accepted,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tally::event::{normalize, Limits, NormalizeContext};

    #[test]
    fn generated_events_are_valid_and_varied() {
        let mut g = Generator::new(7, 3000, 0.05, 0.1);
        let ctx = NormalizeContext {
            received_at: Utc::now(),
            limits: Limits::default(),
            default_source: "api",
        };
        let mut types = std::collections::BTreeSet::new();
        let mut sources = std::collections::BTreeSet::new();
        let mut duplicates = 0;
        let mut late = 0;
        for _ in 0..2_000 {
            let (event, duplicate) = g.next_event();
            duplicates += u32::from(duplicate);
            let normalized = normalize(event, &ctx);
            let Ok(e) = normalized else {
                panic!("invalid generated event: {normalized:?}")
            };
            late += u32::from(e.timestamp < Utc::now() - chrono::Duration::minutes(30));
            types.insert(e.event_type);
            sources.insert(e.source);
        }
        assert!(types.len() >= 9, "{types:?}");
        assert_eq!(
            sources.into_iter().collect::<Vec<_>>(),
            vec!["facebook", "tiktok", "web"]
        );
        assert!((50..200).contains(&duplicates), "{duplicates}");
        assert!((100..350).contains(&late), "{late}");
    }

    #[test]
    fn same_seed_same_events_apart_from_the_run_id() {
        let mut a = Generator::new(1, 10, 0.0, 0.0);
        let mut b = Generator::new(1, 10, 0.0, 0.0);
        let strip = |mut v: Value| {
            v["eventId"] = json!(null);
            v["timestamp"] = json!(null);
            v
        };
        for _ in 0..50 {
            assert_eq!(strip(a.next_event().0), strip(b.next_event().0));
        }
    }
}
