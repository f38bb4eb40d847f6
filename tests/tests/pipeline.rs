//! ingest → SQS (moto) → process → events table (DynamoDB Local), with the real adapters and the
//! sample payloads of `events/`.

use anyhow::{Context, Result};
use chrono::{Duration, SecondsFormat, Utc};
use serde_json::{json, Value};
use tally::counters::CounterSink;
use tally::event::{normalize, Limits, NormalizeContext};
use tally::request_cost::RequestCost;
use tally::signature::{sign_facebook, sign_timestamped};
use tally::store::{EventStatus, EventStore, ProcessedRecord, Provenance, StoreOutcome};
use tally_tests::driver::receive;
use tally_tests::pipeline::{
    queued_event_ids, sample, sample_request, Pipeline, SAMPLE_FACEBOOK_SECRET, SAMPLE_SHOP_SECRET,
    SAMPLE_TIKTOK_SECRET,
};

fn body(r: &tally::http::HttpResponse) -> Value {
    serde_json::from_str(&r.body).unwrap_or(Value::Null)
}

fn set_body(request: &mut Value, body: &str) {
    request["body"] = json!(body);
}

#[tokio::test]
async fn valid_event_end_to_end() -> Result<()> {
    let p = Pipeline::start("end_to_end", &[]).await?;
    let r = p.post(sample_request("api-post-event.json", |_| {})?).await;
    assert_eq!(r.status, 202, "{}", r.body);
    assert_eq!(body(&r)["eventId"], "sample-evt-1");
    assert_eq!(r.header("x-correlation-id"), Some("sample-correlation-1"));
    assert_eq!(p.drain().await?, 1);

    let stored = p.stored("sample-evt-1").await?;
    assert_eq!(stored.status, EventStatus::Processed);
    assert_eq!(
        stored.correlation_id.as_deref(),
        Some("sample-correlation-1")
    );
    assert_eq!(stored.attempts, 1);
    let event = p.stored_event("sample-evt-1").await?;
    assert_eq!(event["leadId"], "email:jane.doe@example.com");
    assert_eq!(
        event["revenue"],
        json!({"amount": "49.90", "currency": "USD"})
    );
    assert_eq!(event["source"], "web");

    let totals = p.counters.totals().await?;
    assert_eq!(
        (totals.accepted_by_source.get("web"), totals.processed),
        (Some(&1), 1)
    );
    // The message left the queue once it was stored.
    assert!(
        receive(&p.stack.sqs, &p.stack.queue("WorkQueue")?.url, 10, 0)
            .await?
            .is_empty()
    );
    Ok(())
}

#[tokio::test]
async fn accepted_spellings_and_publisher_format_are_stored_canonically() -> Result<()> {
    let p = Pipeline::start("spellings", &[]).await?;
    let r = p.post(sample_request("api-post-batch.json", |_| {})?).await;
    assert_eq!(r.status, 207, "{}", r.body);
    let b = body(&r);
    assert_eq!(
        (b["accepted"].clone(), b["rejected"].clone()),
        (json!(3), json!(1))
    );
    assert_eq!(b["results"][3]["status"], "rejected");

    let tiktok_body = sample_body("webhook-tiktok.json")?;
    let now = Utc::now().timestamp();
    let signature = sign_timestamped(SAMPLE_TIKTOK_SECRET, "s", now, tiktok_body.as_bytes());
    let r = p
        .post(sample_request("webhook-tiktok.json", |req| {
            req["headers"]["tiktok-signature"] = json!(signature)
        })?)
        .await;
    assert_eq!(r.status, 202, "{}", r.body);
    p.drain().await?;

    let page_view = p.stored_event("sample-batch-1").await?;
    assert_eq!(
        (page_view["type"].clone(), page_view["leadId"].clone()),
        (json!("PAGE_VIEW"), json!("user:user-2001"))
    );
    let email_open = p.stored_event("sample-batch-2").await?;
    assert_eq!(email_open["type"], "EMAIL_OPEN");
    assert_eq!(
        (
            email_open["userId"].clone(),
            email_open["campaignId"].clone(),
            email_open["funnelStage"].clone()
        ),
        (json!("user-2002"), json!("c-spring-sale"), json!("middle"))
    );
    let demo = p.stored_event("sample-batch-3").await?;
    assert_eq!(
        demo["lead"],
        json!({"email": "dana.fox@example.com", "name": "Dana Fox", "company": "Fox Analytics"})
    );
    assert_eq!(demo["leadId"], "email:dana.fox@example.com");
    assert!(p.store.get("sample-batch-4").await?.is_none());

    // A webhook event's id carries its route's prefix.
    let purchase = p.stored_event("tt:sample-tt-1").await?;
    assert_eq!(purchase["userId"], "tt-user-1");
    assert_eq!(purchase["campaignId"], "tt-campaign-7");
    assert_eq!(
        purchase["revenue"],
        json!({"amount": "19.99", "currency": "USD"})
    );
    assert_eq!(purchase["user"]["country"], "Germany");
    assert_eq!(purchase["payload"]["engagement"]["likes"], 12);
    Ok(())
}

fn sample_body(name: &str) -> Result<String> {
    let value: Value = serde_json::from_str(&sample(name)?)?;
    value["body"]
        .as_str()
        .map(str::to_owned)
        .context("sample has no body")
}

#[tokio::test]
async fn duplicates_are_stored_once_and_redeliveries_are_not_counted() -> Result<()> {
    let p = Pipeline::start("duplicates", &[]).await?;
    for amount in ["10.00", "99.00"] {
        let r = p
            .post(sample_request("api-post-event.json", |req| {
                set_body(
                    req,
                    &json!({"eventId": "dup-1", "type": "PURCHASE", "revenue": {"amount": amount}})
                        .to_string(),
                )
            })?)
            .await;
        assert_eq!(r.status, 202);
        // Processed one at a time so "first" is well defined (SQS does not order messages).
        p.drain().await?;
    }
    let stored = p.stored_event("dup-1").await?;
    assert_eq!(
        stored["revenue"]["amount"], "10.00",
        "the first stored write wins"
    );
    let totals = p.counters.totals().await?;
    assert_eq!((totals.processed, totals.duplicate), (1, 1));

    // Two submissions of one id in the same batch race; exactly one is stored.
    let racing = json!([
        {"eventId": "dup-2", "type": "PURCHASE", "revenue": {"amount": "1.00"}},
        {"eventId": "dup-2", "type": "PURCHASE", "revenue": {"amount": "2.00"}}
    ]);
    let r = p
        .post(sample_request("api-post-batch.json", |req| {
            set_body(req, &racing.to_string())
        })?)
        .await;
    assert_eq!(r.status, 202);
    p.drain().await?;
    let amount = p.stored_event("dup-2").await?["revenue"]["amount"].clone();
    assert!(
        amount == json!("1.00") || amount == json!("2.00"),
        "{amount}"
    );
    let totals = p.counters.totals().await?;
    assert_eq!((totals.processed, totals.duplicate), (2, 2));

    // The same SQS message delivered again (Lambda retry) is recognised and changes nothing.
    let r = p
        .post(sample_request("api-post-event.json", |req| {
            set_body(req, r#"{"eventId":"redelivered-1","type":"A"}"#)
        })?)
        .await;
    assert_eq!(r.status, 202);
    let url = p.stack.queue("WorkQueue")?.url.clone();
    let message = receive(&p.stack.sqs, &url, 1, 30)
        .await?
        .pop()
        .context("queued message")?;
    let inbound = tally::process::InboundMessage {
        message_id: message.message_id.clone().unwrap_or_default(),
        body: message.body.clone().unwrap_or_default(),
        receive_count: 1,
        receipt_handle: message.receipt_handle.clone().unwrap_or_default(),
    };
    assert!(p.processor.process(vec![inbound.clone()]).await.is_empty());
    assert!(p.processor.process(vec![inbound]).await.is_empty());
    let totals = p.counters.totals().await?;
    assert_eq!((totals.processed, totals.duplicate), (3, 2));
    Ok(())
}

#[tokio::test]
async fn poison_message_reaches_the_dlq_with_dead_letter_recorded() -> Result<()> {
    let p = Pipeline::start("poison", &["poison-1"]).await?;
    let batch = json!([
        {"eventId": "good-1", "type": "PAGE_VIEW"},
        {"eventId": "poison-1", "type": "PAGE_VIEW"},
        {"eventId": "good-2", "type": "EMAIL_OPEN"}
    ]);
    let r = p
        .post(sample_request("api-post-batch.json", |req| {
            set_body(req, &batch.to_string())
        })?)
        .await;
    assert_eq!(r.status, 202, "{}", r.body);
    // Invalid data is recorded as REJECTED and not retried: a body that is no envelope at all.
    let url = p.stack.queue("WorkQueue")?.url.clone();
    let sent = p
        .stack
        .sqs
        .send_message()
        .queue_url(&url)
        .message_body("not-json")
        .send()
        .await?;
    let garbage_id = format!("sqs:{}", sent.message_id().unwrap_or_default());

    let deliveries = p.drain().await?;
    // The three events travel in one message, retried whole while the poison event fails:
    // one delivery per attempt, plus the garbage.
    assert_eq!(deliveries, 1 + p.max_receive_count as usize);

    for id in ["good-1", "good-2"] {
        assert_eq!(p.stored(id).await?.status, EventStatus::Processed);
    }
    let poison = p.stored("poison-1").await?;
    assert_eq!(poison.status, EventStatus::DeadLetter);
    assert_eq!(poison.attempts, p.max_receive_count);
    assert!(poison
        .failure_reason
        .as_deref()
        .is_some_and(|r| r.contains("ProvisionedThroughputExceeded")));
    assert!(poison.event_json.is_some(), "the event is kept for replay");

    let garbage = p.stored(&garbage_id).await?;
    assert_eq!(garbage.status, EventStatus::Rejected);
    assert_eq!(
        garbage.failure_reason.as_deref(),
        Some("message body is not a Tally envelope")
    );

    let dlq = p.stack.queue("DeadLetterQueue")?.url.clone();
    let dead = receive(&p.stack.sqs, &dlq, 10, 30).await?;
    assert_eq!(dead.len(), 1);
    let ids = queued_event_ids(dead[0].body().unwrap_or_default())?;
    assert_eq!(
        ids,
        ["good-1", "poison-1", "good-2"],
        "the message as it was sent"
    );
    let attribute = dead[0]
        .message_attributes()
        .and_then(|a| a.get("correlationId"))
        .and_then(|v| v.string_value());
    assert_eq!(
        attribute,
        Some("sample-correlation-1"),
        "correlation id travels with the message"
    );

    // The good events were stored on the first attempt and recognised on the others.
    let totals = p.counters.totals().await?;
    assert_eq!(
        (
            totals.processed,
            totals.rejected,
            totals.failed,
            totals.dead_lettered
        ),
        (2, 1, u64::from(p.max_receive_count), 1)
    );
    // By source too: every failed delivery of the poison event, under the label it was
    // accepted under.
    let accepted: Vec<&String> = totals.accepted_by_source.keys().collect();
    assert_eq!(accepted.len(), 1, "{totals:?}");
    assert_eq!(
        totals.failed_by_source.get(accepted[0]),
        Some(&u64::from(p.max_receive_count)),
        "{totals:?}"
    );
    for id in ["good-1", "good-2"] {
        let good = p.stored(id).await?;
        assert_eq!(good.attempts, 1, "{id} stored on the first delivery");
        assert_eq!(good.history.len(), 1, "{id}: {:?}", good.history);
    }
    Ok(())
}

#[tokio::test]
async fn a_message_retried_for_one_event_counts_its_other_events_once() -> Result<()> {
    let p = Pipeline::start("retried", &["poison-3"]).await?;
    let now = Utc::now();
    let at = |t: chrono::DateTime<Utc>| t.to_rfc3339_opts(SecondsFormat::Millis, true);
    // Stored, rejected by the processor's own checks (older than the age limit when received),
    // and failing to store: one message, as ingest packs them.
    let envelope = json!({
        "submissionId": "sub-retried",
        "receivedAt": at(now),
        "correlationId": "corr-retried",
        "events": [
            {"eventId": "keep-1", "type": "PAGE_VIEW", "timestamp": at(now), "source": "api"},
            {"eventId": "old-1", "type": "PAGE_VIEW", "timestamp": at(now - chrono::Duration::days(40)), "source": "api"},
            {"eventId": "poison-3", "type": "PAGE_VIEW", "timestamp": at(now), "source": "api"}
        ]
    });
    let delivery = |receive_count| tally::process::InboundMessage {
        message_id: "m-retried".into(),
        body: envelope.to_string(),
        receive_count,
        receipt_handle: String::new(),
    };
    for attempt in 1..=2 {
        let failed = p.processor.process(vec![delivery(attempt)]).await;
        assert_eq!(
            failed,
            ["m-retried"],
            "attempt {attempt}: retried for poison-3"
        );
    }
    let totals = p.counters.totals().await?;
    assert_eq!(
        (totals.processed, totals.rejected, totals.failed),
        (1, 1, 2),
        "the stored and the rejected event counted once, the failing one per attempt"
    );
    let keep = p.stored("keep-1").await?;
    assert_eq!((keep.status, keep.attempts), (EventStatus::Processed, 1));
    let old = p.stored("old-1").await?;
    assert_eq!(old.status, EventStatus::Rejected);
    assert_eq!(old.history.len(), 1, "{:?}", old.history);
    let poison = p.stored("poison-3").await?;
    assert_eq!((poison.status, poison.attempts), (EventStatus::Failed, 2));
    Ok(())
}

#[tokio::test]
async fn csv_with_bad_rows_reports_row_numbers_and_stores_the_rest() -> Result<()> {
    let p = Pipeline::start("csv", &[]).await?;
    let r = p.post(sample_request("api-post-csv.json", |_| {})?).await;
    assert_eq!(r.status, 207, "{}", r.body);
    let b = body(&r);
    let rejected: Vec<&Value> = b["results"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|r| r["status"] == "rejected")
        .collect();
    assert_eq!(rejected.len(), 1);
    assert_eq!(rejected[0]["row"], 5);
    let paths: Vec<&str> = rejected[0]["error"]["details"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|d| d["path"].as_str())
        .collect();
    assert_eq!(paths, vec!["/funnelStage", "/revenue/currency"]);
    p.drain().await?;
    let purchase = p.stored_event("sample-csv-1").await?;
    assert_eq!(
        purchase["revenue"],
        json!({"amount": "120.00", "currency": "EUR"})
    );
    assert_eq!(purchase["lead"]["company"], "Lee & Co");
    assert_eq!(
        p.stored_event("sample-csv-3").await?["lead"]["company"],
        "Chen, Inc."
    );
    Ok(())
}

#[tokio::test]
async fn facebook_webhook_good_and_tampered_signatures() -> Result<()> {
    let p = Pipeline::start("facebook", &[]).await?;
    let mut payload: Value = serde_json::from_str(&sample_body("webhook-facebook.json")?)?;
    let created = Utc::now().timestamp() - 60;
    for change in payload["entry"][0]["changes"]
        .as_array_mut()
        .into_iter()
        .flatten()
    {
        if change["field"] == "leadgen" {
            change["value"]["created_time"] = json!(created);
        }
    }
    let raw = payload.to_string();
    let signature = sign_facebook(SAMPLE_FACEBOOK_SECRET, raw.as_bytes());
    let signed = |body: String, signature: String| {
        sample_request("webhook-facebook.json", move |req| {
            set_body(req, &body);
            req["headers"]["x-hub-signature-256"] = json!(signature);
        })
    };
    let tampered = p
        .post(signed(
            raw.replace("444555666", "444555000"),
            signature.clone(),
        )?)
        .await;
    assert_eq!(
        (tampered.status, body(&tampered)["error"]["code"].clone()),
        (403, json!("INVALID_SIGNATURE"))
    );
    let r = p.post(signed(raw, signature)?).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        body(&r),
        json!({"received": 2, "rejected": 0, "ignored": 1})
    );
    p.drain().await?;
    let lead = p.stored_event("fb:444555666").await?;
    assert_eq!(
        (
            lead["type"].clone(),
            lead["leadId"].clone(),
            lead["campaignId"].clone()
        ),
        (
            json!("FORM_SUBMISSION"),
            json!("fb:444555666"),
            json!("999")
        )
    );
    let expected_time = chrono::DateTime::from_timestamp(created, 0)
        .context("time")?
        .to_rfc3339_opts(SecondsFormat::Millis, true);
    assert_eq!(lead["timestamp"], json!(expected_time));
    assert!(
        p.store.get("fb:444555000").await?.is_none(),
        "nothing from the tampered delivery"
    );

    let r = p
        .post(sample_request("webhook-facebook-verify.json", |_| {})?)
        .await;
    assert_eq!((r.status, r.body.as_str()), (200, "1158201444"));
    Ok(())
}

#[tokio::test]
async fn generic_webhook_and_gzip_sample() -> Result<()> {
    let p = Pipeline::start("generic", &[]).await?;
    let raw = sample_body("webhook-generic.json")?;
    let signature = sign_timestamped(
        SAMPLE_SHOP_SECRET,
        "v1",
        Utc::now().timestamp(),
        raw.as_bytes(),
    );
    let r = p
        .post(sample_request("webhook-generic.json", |req| {
            req["headers"]["x-signature"] = json!(signature)
        })?)
        .await;
    assert_eq!(r.status, 202, "{}", r.body);
    let stale = sign_timestamped(
        SAMPLE_SHOP_SECRET,
        "v1",
        (Utc::now() - Duration::minutes(6)).timestamp(),
        raw.as_bytes(),
    );
    let r = p
        .post(sample_request("webhook-generic.json", |req| {
            req["headers"]["x-signature"] = json!(stale)
        })?)
        .await;
    assert_eq!(r.status, 403);
    let r = p
        .post(sample_request("api-post-event-gzip.json", |_| {})?)
        .await;
    assert_eq!(r.status, 202, "{}", r.body);
    let gzip_event_id = body(&r)["eventId"].as_str().unwrap_or_default().to_owned();
    p.drain().await?;
    let shop = p.stored_event("wh:shop:sample-shop-1").await?;
    assert_eq!(
        (shop["source"].clone(), shop["revenue"]["currency"].clone()),
        (json!("shop"), json!("EUR"))
    );
    assert_eq!(
        p.stored(&gzip_event_id).await?.status,
        EventStatus::Processed
    );
    // Processed events are counted under the label their acceptance was: the configured
    // webhook source by name, though process's own list does not name it.
    let totals = p.counters.totals().await?;
    assert_eq!(totals.processed_by_source, totals.accepted_by_source);
    assert_eq!(
        totals.processed_by_source.get("shop"),
        Some(&1),
        "{totals:?}"
    );
    Ok(())
}

#[tokio::test]
async fn unreachable_queue_answers_503_without_internals() -> Result<()> {
    let p = Pipeline::start("queue_down", &[]).await?;
    let mut config = tally_tests::pipeline::ingest_config(&p.stack)?;
    config.work_queue_url = format!("{}/123456789012/does-not-exist", p.stack.moto_endpoint);
    let sqs = tally_tests::sdk_config(&p.stack.moto_endpoint);
    let dynamodb = tally_tests::sdk_config(&p.stack.dynamodb_endpoint);
    let ingest = tally::ingest::Ingest::new(
        config.clone(),
        tally::aws::SqsEventQueue::new(&sqs, config.work_queue_url.clone()),
        tally::aws::DynamoCounters::new(&dynamodb, config.analytics_table.clone()),
    );
    let r = ingest
        .handle(sample_request("api-post-event.json", |_| {})?)
        .await;
    assert_eq!(r.status, 503);
    let b = body(&r);
    assert_eq!(b["error"]["code"], "SERVICE_UNAVAILABLE");
    assert!(
        !r.body.contains("NonExistentQueue") && !r.body.contains("does-not-exist"),
        "{}",
        r.body
    );
    Ok(())
}

#[tokio::test]
async fn sqs_sample_is_processed_with_the_poison_record_rejected() -> Result<()> {
    let p = Pipeline::start("sqs_sample", &[]).await?;
    let mut event: Value = serde_json::from_str(&sample("sqs-process-batch.json")?)?;
    let now = Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true);
    for record in event["Records"].as_array_mut().into_iter().flatten() {
        let Ok(mut envelope) =
            serde_json::from_str::<Value>(record["body"].as_str().unwrap_or_default())
        else {
            continue;
        };
        envelope["receivedAt"] = json!(now);
        if let Some(event) = envelope.get_mut("event") {
            event["timestamp"] = json!(now);
        }
        let packed = envelope.get_mut("events").and_then(Value::as_array_mut);
        for event in packed.into_iter().flatten() {
            event["timestamp"] = json!(now);
        }
        record["body"] = json!(envelope.to_string());
    }
    let messages = tally::process::inbound_messages(serde_json::from_value(event)?)?;
    assert_eq!(messages.len(), 3);
    let poison_id = format!("sqs:{}", messages[2].message_id);
    let failed = p.processor.process(messages).await;
    assert!(failed.is_empty(), "invalid data is not retried: {failed:?}");
    for id in ["sample-evt-1", "sample-evt-2", "fb:444555666"] {
        assert_eq!(p.stored(id).await?.status, EventStatus::Processed, "{id}");
    }
    let first = p.stored("sample-evt-1").await?;
    let second = p.stored("sample-evt-2").await?;
    assert_ne!(
        first.submission_id, second.submission_id,
        "each event of a packed message is a submission of its own"
    );
    assert_eq!(p.stored(&poison_id).await?.status, EventStatus::Rejected);
    Ok(())
}

/// DynamoDB bills a write by the KB: a processed event's item keeps only what is read back (the
/// canonical event, its provenance and index keys), so a publisher-format event with its
/// demographics and engagement, the largest kind the replaced systems send, is written in one
/// unit on the table and one on each index it is in (`byLead`, `byHourShard`).
#[tokio::test]
async fn a_publisher_event_is_stored_in_one_write_unit_per_table_and_index() -> Result<()> {
    let p = Pipeline::start("item_size", &[]).await?;
    let received_at = Utc::now();
    let raw = json!({
        "eventId": "gen-1a2b-1796529340026-100234", "timestamp": received_at.to_rfc3339(),
        "source": "facebook", "funnelStage": "bottom", "eventType": "PURCHASE",
        "data": {
            "user": {"userId": "facebook-u8231", "age": 34, "gender": "non-binary",
                "location": {"country": "United States", "city": "Springfield"}, "followers": 183_422},
            "engagement": {"campaignId": "facebook-c17", "likes": 412, "purchaseAmount": "123.45"}
        }
    });
    let ctx = NormalizeContext {
        received_at,
        limits: Limits::default(),
        default_source: "api",
    };
    let event = normalize(raw, &ctx).map_err(|e| anyhow::anyhow!("{e:?}"))?;
    let record = ProcessedRecord {
        event_json: event
            .to_canonical_json()
            .map_err(|e| anyhow::anyhow!("{e:?}"))?,
        event,
        provenance: Provenance {
            submission_id: "0191f2a4-7c3e-7d2a-9b1e-5f2c8a4d6e10/99".into(),
            correlation_id: "6f1c2d3e-4b5a-4978-8c6d-5e4f3a2b1c0d".into(),
            received_at,
            attempts: 1,
        },
        processed_at: Utc::now(),
    };
    let (stored, cost) = RequestCost::measure(p.store.store_processed(&record)).await;
    assert_eq!(stored?, StoreOutcome::Stored);
    assert_eq!(cost.write_units, 3.0, "{cost:?}");
    // Its history still ends with how it was processed.
    let history = p.stored(&record.event.event_id).await?.history;
    assert_eq!(
        history
            .iter()
            .map(|h| (h.status.as_str(), h.attempts, h.correlation_id.as_deref()))
            .collect::<Vec<_>>(),
        vec![(
            "PROCESSED",
            Some(1),
            Some(record.provenance.correlation_id.as_str())
        )]
    );
    Ok(())
}
