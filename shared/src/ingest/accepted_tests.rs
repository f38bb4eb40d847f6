//! Property: every event `ingest` accepts, `process` stores as `PROCESSED` (never `REJECTED`).
//! Events are generated around every limit the rules have (lengths, the time window, amounts,
//! derived lead ids, case-changing lowercase), posted as a batch, and the queued messages are
//! handed to the real processor.

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use proptest::prelude::*;
use serde_json::{json, Map, Value};

use super::tests::{config, request, FakeCounters, FakeQueue, INGEST};
use super::*;
use crate::process::{InboundMessage, Processor};
use crate::store::{
    EventStore, FailureRecord, ProcessedRecord, StoreError, StoreOutcome, StoredEvent,
};

/// Counts what the processor asked the store to do.
#[derive(Default, Clone)]
struct Outcomes {
    processed: Arc<Mutex<Vec<String>>>,
    failures: Arc<Mutex<Vec<String>>>,
}

#[async_trait]
impl EventStore for Outcomes {
    async fn store_processed(&self, record: &ProcessedRecord) -> Result<StoreOutcome, StoreError> {
        if let Ok(mut p) = self.processed.lock() {
            p.push(record.event.event_id.clone());
        }
        Ok(StoreOutcome::Stored)
    }
    async fn record_failure(&self, record: &FailureRecord) -> Result<(), StoreError> {
        if let Ok(mut f) = self.failures.lock() {
            f.push(format!("{} {}", record.event_id, record.reason));
        }
        Ok(())
    }
    async fn record_replay(&self, _: &str, _: DateTime<Utc>, _: &str) -> Result<(), StoreError> {
        Ok(())
    }
    async fn get(&self, _: &str) -> Result<Option<StoredEvent>, StoreError> {
        Ok(None)
    }
}

fn text(max: usize) -> impl Strategy<Value = String> {
    // Letters whose lowercase is longer (İ), multi-byte ones, and plain ASCII.
    prop::collection::vec(
        prop_oneof![
            Just('a'),
            Just('Z'),
            Just('İ'),
            Just('é'),
            Just('-'),
            Just('7')
        ],
        1..=max,
    )
    .prop_map(|chars| chars.into_iter().collect())
}

fn email() -> impl Strategy<Value = String> {
    (text(70), text(140)).prop_map(|(local, domain)| format!("{local}@{domain}.com"))
}

fn timestamp(now: DateTime<Utc>) -> impl Strategy<Value = Value> {
    let limit_ms = 31 * 86_400_000_i64;
    (-limit_ms..=400_000_i64, 0u32..1_000_000, 0usize..4).prop_map(move |(ms, nanos, form)| {
        let t =
            now + chrono::Duration::milliseconds(ms) + chrono::Duration::nanoseconds(nanos.into());
        match form {
            0 => json!(t.timestamp_millis()),
            1 => json!(t.to_rfc3339_opts(chrono::SecondsFormat::Nanos, true)),
            2 => json!(t
                .with_timezone(
                    &chrono::FixedOffset::east_opt(5 * 3600 + 1800)
                        .unwrap_or_else(|| unreachable!())
                )
                .to_rfc3339()),
            _ => json!(t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)),
        }
    })
}

fn amount() -> impl Strategy<Value = Value> {
    prop_oneof![
        (any::<i64>(), 0u32..6)
            .prop_map(|(n, scale)| json!(rust_decimal::Decimal::new(n, scale).to_string())),
        (-1e13f64..1e13).prop_map(|f| json!(f)),
        Just(json!("999999999999.9999")),
        Just(json!("-999999999999.9999")),
        Just(json!("1000000000000")),
    ]
}

fn event(now: DateTime<Utc>) -> impl Strategy<Value = Value> {
    (
        prop::option::of(prop_oneof![text(130), Just("fb:1".to_owned())]),
        prop_oneof![Just("PAGE_VIEW".to_owned()), text(66)],
        prop::option::of(timestamp(now)),
        prop::option::of(prop_oneof![
            Just("api".to_owned()),
            Just("facebook".to_owned()),
            Just("Bad".to_owned())
        ]),
        prop::option::of(text(130)),
        prop::option::of(email()),
        prop::option::of(text(130)),
        prop::option::of((amount(), prop_oneof![Just("usd"), Just("EUR"), Just("XXX")])),
        prop::option::of((0u64..200, text(40), prop_oneof![Just("de"), Just("Germany"), Just("ZZ")])),
    )
        .prop_map(
            |(id, kind, at, source, lead_id, email, user_id, revenue, user)| {
                let mut e = Map::new();
                e.insert("type".into(), json!(kind));
                let optional = [
                    ("eventId", id.map(Value::from)),
                    ("timestamp", at),
                    ("source", source.map(Value::from)),
                    ("leadId", lead_id.map(Value::from)),
                    ("userId", user_id.map(Value::from)),
                    ("lead", email.map(|m| json!({"email": m}))),
                    (
                        "revenue",
                        revenue.map(|(amount, currency)| json!({"amount": amount, "currency": currency})),
                    ),
                    (
                        "user",
                        user.map(|(age, city, country)| json!({"age": age, "city": city, "country": country})),
                    ),
                ];
                for (key, value) in optional {
                    if let Some(v) = value {
                        e.insert(key.into(), v);
                    }
                }
                Value::Object(e)
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn every_event_ingest_accepts_is_processed(events in prop::collection::vec(event(Utc::now()), 1..8)) {
        let runtime = tokio::runtime::Builder::new_current_thread().build()?;
        let (accepted, processed, failures) = runtime.block_on(async {
            let ingest = Ingest::new(config(), FakeQueue::default(), FakeCounters::default());
            let body = serde_json::to_vec(&events).unwrap_or_default();
            let response = ingest
                .handle(request("POST", "/v1/events/batch", &[INGEST], body))
                .await;
            let answer: Value = serde_json::from_str(&response.body).unwrap_or(Value::Null);
            let accepted = answer["accepted"].as_u64().unwrap_or(0) as usize;
            let messages: Vec<InboundMessage> = ingest
                .queue
                .sent
                .lock()
                .map(|m| m.clone())
                .unwrap_or_default()
                .into_iter()
                .enumerate()
                .map(|(i, m)| InboundMessage {
                    message_id: format!("m{i}"),
                    body: m.body,
                    receive_count: 1,
                    receipt_handle: String::new(),
                })
                .collect();
            let store = Outcomes::default();
            let processor =
                Processor::new(store.clone(), FakeCounters::default(), config().limits, 5);
            let retried = processor.process(messages).await;
            assert!(retried.is_empty(), "{retried:?}");
            let processed = store.processed.lock().map(|p| p.len()).unwrap_or(0);
            let failures = store.failures.lock().map(|f| f.clone()).unwrap_or_default();
            (accepted, processed, failures)
        });
        prop_assert!(failures.is_empty(), "accepted by ingest, rejected by process: {failures:?}");
        prop_assert_eq!(processed, accepted);
    }
}
