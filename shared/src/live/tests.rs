use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use serde_json::{json, Value};

use super::*;
use crate::auth::ApiKeys;
use crate::secrets::{Secrets, SecretsCache};

const READ: &str = "local-read-key";

fn now() -> DateTime<Utc> {
    DateTime::from_timestamp_millis(1_796_509_800_000).unwrap_or_default()
}

fn hub() -> (LiveHub, Arc<MemoryConnections>, Arc<MemorySockets>) {
    let spec = format!(
        "{}:read, {}:ingest, {}:admin",
        ApiKeys::digest(READ),
        ApiKeys::digest("an-ingest-key"),
        ApiKeys::digest("an-admin-key")
    );
    let keys = SecretsCache::inline(Secrets {
        api_keys: ApiKeys::parse(&spec).unwrap_or_default(),
        ..Secrets::default()
    });
    let connections = Arc::new(MemoryConnections::default());
    let sockets = Arc::new(MemorySockets::default());
    (
        LiveHub::new(keys, connections.clone(), sockets.clone()),
        connections,
        sockets,
    )
}

fn b64(key: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(key)
}

fn connect(id: &str, protocol: Option<&str>) -> Value {
    let mut event = json!({"requestContext": {"routeKey": "$connect", "eventType": "CONNECT",
                            "connectionId": id, "requestId": "r1"}, "headers": {}});
    if let Some(p) = protocol {
        event["headers"]["Sec-WebSocket-Protocol"] = json!(p);
    }
    event
}

fn route(route_key: &str, id: &str) -> Value {
    json!({"requestContext": {"routeKey": route_key, "connectionId": id}, "headers": null})
}

#[tokio::test]
async fn the_sample_connect_with_a_read_key_is_accepted_and_kept_with_a_ttl() {
    let (hub, connections, _) = hub();
    let event: Value =
        serde_json::from_str(include_str!("../../../events/live-connect.json")).unwrap_or_default();
    let answer = hub.handle(event, now()).await;
    assert_eq!(answer["statusCode"], 200, "{answer}");
    // Only the protocol is selected: the key is never echoed.
    assert_eq!(answer["headers"]["Sec-WebSocket-Protocol"], PROTOCOL);
    let kept = connections.get("Q2xV0cR5joECJ5A=");
    assert_eq!(
        kept.map(|c| (c.connected_at, c.expires_at - c.connected_at)),
        Some((now(), Duration::seconds(CONNECTION_TTL_SECONDS)))
    );
}

#[tokio::test]
async fn a_connect_without_a_read_key_is_refused_and_nothing_is_kept() {
    let (hub, connections, _) = hub();
    let cases = [
        (None, 401),
        (Some("tally.v1".to_owned()), 401),
        // The key without the protocol the console speaks.
        (Some(format!("key.{}", b64(READ))), 401),
        (Some("tally.v1, key.***".to_owned()), 401),
        (Some(format!("tally.v1, key.{}", b64("unknown"))), 401),
        (Some(format!("tally.v1, key.{}", b64("an-ingest-key"))), 403),
        (
            Some(format!("tally.v1, key.{}{}", b64(READ), "A".repeat(3000))),
            401,
        ),
    ];
    for (i, (protocol, status)) in cases.into_iter().enumerate() {
        let answer = hub
            .handle(connect(&format!("c{i}"), protocol.as_deref()), now())
            .await;
        assert_eq!(answer["statusCode"], status, "{protocol:?}: {answer}");
        assert!(answer.get("headers").is_none(), "{answer}");
    }
    assert!(connections.ids().is_empty());
    // An admin key may read.
    let admin = format!("key.{}, {PROTOCOL}", b64("an-admin-key"));
    let answer = hub.handle(connect("admin", Some(&admin)), now()).await;
    assert_eq!(answer["statusCode"], 200, "{answer}");
}

#[tokio::test]
async fn connections_are_bounded_and_a_disconnect_forgets_one() {
    let (hub, connections, _) = hub();
    let protocol = format!("tally.v1, key.{}", b64(READ));
    for i in 0..MAX_CONNECTIONS {
        let _ = connections
            .add(&Connection {
                id: format!("c{i:04}"),
                connected_at: now(),
                expires_at: now() + Duration::hours(1),
            })
            .await;
    }
    let answer = hub
        .handle(connect("one-too-many", Some(&protocol)), now())
        .await;
    assert_eq!(answer["statusCode"], 429);
    hub.handle(route("$disconnect", "c0000"), now()).await;
    assert_eq!(connections.ids().len(), MAX_CONNECTIONS - 1);
    let answer = hub
        .handle(connect("now-fits", Some(&protocol)), now())
        .await;
    assert_eq!(answer["statusCode"], 200);
    // A store that does not answer refuses the connection rather than lose track of it.
    connections.set_down(true);
    let answer = hub
        .handle(connect("store-down", Some(&protocol)), now())
        .await;
    assert_eq!(answer["statusCode"], 503);
    // Whatever a console sends is accepted and ignored.
    connections.set_down(false);
    let answer = hub.handle(route("$default", "now-fits"), now()).await;
    assert_eq!(answer["statusCode"], 200);
}

async fn open(connections: &MemoryConnections, id: &str, expires_in: Duration) {
    let _ = connections
        .add(&Connection {
            id: id.to_owned(),
            connected_at: now() - Duration::minutes(1),
            expires_at: now() + expires_in,
        })
        .await;
}

fn decoded(message: &[u8]) -> Value {
    serde_json::from_slice(message).unwrap_or_default()
}

#[tokio::test]
async fn a_batch_becomes_one_message_per_open_connection_and_gone_ones_are_forgotten() {
    let (hub, connections, sockets) = hub();
    for id in ["a", "b", "gone", "broken"] {
        open(&connections, id, Duration::hours(1)).await;
    }
    open(&connections, "expired", -Duration::seconds(1)).await;
    sockets.mark_gone("gone");
    sockets.mark_failing("broken");
    let event: LiveStreamEvent =
        serde_json::from_str(include_str!("../../../events/live-stream-batch.json"))
            .unwrap_or_default();
    let outcome = hub.push(&event, now()).await;
    assert_eq!(
        outcome,
        LiveOutcome {
            records: 2,
            leads: 2,
            stage_changes: 1,
            connections: 4,
            sent: 2,
            gone: 1,
            failed: 1,
        }
    );
    for id in ["a", "b"] {
        let received = sockets.received(id);
        assert_eq!(received.len(), 1, "one message per connection per batch");
        let message = decoded(&received[0]);
        assert_eq!(message["type"], "leads");
        assert_eq!(message["truncated"], false);
        assert_eq!(
            message["leads"][0],
            json!({"leadId": "email:ada@example.com", "score": 105, "stage": "MQL",
                   "lastActivityAt": "2026-12-05T22:30:00.000Z", "eventCount": 5,
                   "company": "Analytical Engines"})
        );
        assert_eq!(message["leads"][1]["leadId"], "user:42");
        assert_eq!(message["leads"][1]["stage"], Value::Null);
        assert_eq!(message["stageChanges"][0]["to"], "MQL");
        assert_eq!(message["stageChanges"][0]["eventId"], "e-5");
    }
    assert!(sockets.received("expired").is_empty());
    // The gone connection is forgotten; the one that failed otherwise is kept for the next push.
    assert_eq!(connections.ids(), ["a", "b", "broken", "expired"]);
}

fn lead_record(seq: u32, lead: &str, score: i64) -> Value {
    json!({"eventName": "MODIFY", "dynamodb": {"SequenceNumber": seq.to_string(), "NewImage": {
        "pk": {"S": format!("LEAD#{lead}")}, "sk": {"S": "STATE"}, "score": {"N": score.to_string()},
        "events": {"N": "1"}}}})
}

#[tokio::test]
async fn a_lead_written_twice_in_a_batch_is_listed_once_as_last_written_and_other_items_are_skipped(
) {
    let (hub, connections, sockets) = hub();
    open(&connections, "a", Duration::hours(1)).await;
    let event: LiveStreamEvent = serde_json::from_value(json!({"Records": [
        lead_record(1, "l1", 10),
        {"eventName": "INSERT", "dynamodb": {"SequenceNumber": "2", "NewImage": {
            "pk": {"S": "AGG#2026-12-05"}, "sk": {"S": "P#1"}}}},
        lead_record(3, "l2", 20),
        lead_record(4, "l1", 30),
        {"eventName": "REMOVE", "dynamodb": {"SequenceNumber": "5", "OldImage": {
            "pk": {"S": "LEAD#l3"}, "sk": {"S": "STATE"}}}},
    ]}))
    .unwrap_or_default();
    let outcome = hub.push(&event, now()).await;
    assert_eq!((outcome.records, outcome.leads, outcome.sent), (5, 2, 1));
    let message = decoded(&sockets.received("a")[0]);
    let leads: Vec<(String, i64)> = message["leads"]
        .as_array()
        .map(|l| {
            l.iter()
                .map(|l| {
                    (
                        l["leadId"].as_str().unwrap_or_default().to_owned(),
                        l["score"].as_i64().unwrap_or(0),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    assert_eq!(leads, [("l2".to_owned(), 20), ("l1".to_owned(), 30)]);

    // A batch without lead writes sends nothing at all.
    let aggregates: LiveStreamEvent = serde_json::from_value(json!({"Records": [
        {"eventName": "INSERT", "dynamodb": {"SequenceNumber": "9", "NewImage": {
            "pk": {"S": "AGG#2026-12-05"}, "sk": {"S": "P#2"}}}}]}))
    .unwrap_or_default();
    let outcome = hub.push(&aggregates, now()).await;
    assert_eq!((outcome.connections, outcome.sent), (0, 0));
    assert_eq!(sockets.received("a").len(), 1);
}

#[tokio::test]
async fn a_batch_of_more_leads_than_a_message_holds_says_it_is_truncated() {
    let (hub, connections, sockets) = hub();
    open(&connections, "a", Duration::hours(1)).await;
    let records: Vec<Value> = (0..MAX_LEADS_PER_MESSAGE as u32 + 5)
        .map(|i| lead_record(i, &format!("l{i}"), i64::from(i)))
        .collect();
    let event: LiveStreamEvent =
        serde_json::from_value(json!({ "Records": records })).unwrap_or_default();
    hub.push(&event, now()).await;
    let message = decoded(&sockets.received("a")[0]);
    assert_eq!(message["truncated"], true);
    assert_eq!(
        message["leads"].as_array().map(Vec::len),
        Some(MAX_LEADS_PER_MESSAGE)
    );
    assert!(sockets.received("a")[0].len() < 128 * 1024);
}

#[tokio::test]
async fn a_push_reports_every_record_handled_even_when_sends_fail() {
    let (hub, connections, sockets) = hub();
    open(&connections, "a", Duration::hours(1)).await;
    sockets.mark_failing("a");
    let event: Value = serde_json::from_str(include_str!("../../../events/live-stream-batch.json"))
        .unwrap_or_default();
    assert_eq!(
        hub.handle(event.clone(), now()).await,
        json!({"batchItemFailures": []})
    );
    connections.set_down(true);
    assert_eq!(
        hub.handle(event, now()).await,
        json!({"batchItemFailures": []})
    );
}
