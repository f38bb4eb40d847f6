//! Route logic with in-memory fakes for the queue and counters (storage is exercised against the
//! emulators in the `tests/` crate).

use std::collections::HashMap;
use std::io::Write;
use std::sync::Mutex;

use async_trait::async_trait;
use flate2::{write::GzEncoder, Compression};
use serde_json::json;

use super::*;
use crate::auth::ApiKeys;
use crate::body::MAX_CSV_ROWS;
use crate::config::FacebookConfig;
use crate::event::Limits;
use crate::queue::SendReport;
use crate::signature::{sign_facebook, sign_timestamped, WebhookSecrets};
use crate::store::StoreError;

#[derive(Default)]
pub(super) struct FakeQueue {
    pub(super) sent: Mutex<Vec<OutboundMessage>>,
    /// Messages carrying an event of this type cannot be queued.
    failing_type: Option<&'static str>,
}

#[async_trait]
impl EventQueue for FakeQueue {
    async fn send(&self, messages: &[OutboundMessage]) -> SendReport {
        let mut failed = Vec::new();
        for (i, m) in messages.iter().enumerate() {
            let carries = |t: &str| m.body.contains(&format!(r#""type":"{t}""#));
            if self.failing_type.is_some_and(carries) {
                failed.push(i);
            } else if let Ok(mut sent) = self.sent.lock() {
                sent.push(m.clone());
            }
        }
        SendReport { failed }
    }
}

#[derive(Default)]
pub(super) struct FakeCounters(Mutex<CounterDelta>);

#[async_trait]
impl CounterSink for FakeCounters {
    async fn add(&self, delta: &CounterDelta) -> Result<(), StoreError> {
        if let Ok(mut total) = self.0.lock() {
            total.merge(delta);
        }
        Ok(())
    }

    async fn totals(&self) -> Result<CounterDelta, StoreError> {
        Ok(self.0.lock().map(|t| t.clone()).unwrap_or_default())
    }
}

pub(super) fn config() -> IngestConfig {
    let keys = format!(
        "{}:ingest,{}:read,{}:admin",
        ApiKeys::digest("ingest-key"),
        ApiKeys::digest("read-key"),
        ApiKeys::digest("admin-key")
    );
    IngestConfig {
        work_queue_url: "queue".into(),
        analytics_table: "analytics".into(),
        api_keys: ApiKeys::parse(&keys).unwrap_or_default(),
        facebook: Some(FacebookConfig {
            app_secret: "fb-secret".into(),
            verify_token: "verify-me".into(),
        }),
        tiktok_secret: Some("tt-secret".into()),
        webhook_secrets: WebhookSecrets::parse("shop=old-secret,shop=new-secret")
            .unwrap_or_default(),
        counted_sources: crate::counters::CountedSources::default(),
        limits: Limits::default(),
    }
}

pub(super) fn service() -> Ingest<FakeQueue, FakeCounters> {
    Ingest::new(config(), FakeQueue::default(), FakeCounters::default())
}

pub(super) fn request(
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: impl Into<Vec<u8>>,
) -> HttpRequest {
    HttpRequest {
        method: method.into(),
        path: path.into(),
        headers: headers
            .iter()
            .map(|(k, v)| (k.to_ascii_lowercase(), v.to_string()))
            .collect(),
        query: HashMap::new(),
        body: body.into(),
        request_id: "req-1".into(),
    }
}

pub(super) const INGEST: (&str, &str) = ("authorization", "Bearer ingest-key");

fn body(r: &HttpResponse) -> Value {
    serde_json::from_str(&r.body).unwrap_or(Value::Null)
}

fn sent(s: &Ingest<FakeQueue, FakeCounters>) -> Vec<OutboundMessage> {
    s.queue.sent.lock().map(|m| m.clone()).unwrap_or_default()
}

#[tokio::test]
async fn single_event_is_queued_with_its_correlation_id() {
    let s = service();
    let r = s
        .handle(request(
            "POST",
            "/v1/events",
            &[
                INGEST,
                ("x-correlation-id", "corr-42"),
                ("content-type", "application/json; charset=utf-8"),
            ],
            r#"{"eventId":"e1","type":"PAGE_VIEW","userId":"u1"}"#,
        ))
        .await;
    assert_eq!(r.status, 202, "{}", r.body);
    assert_eq!(body(&r), json!({"eventId": "e1", "status": "queued"}));
    assert_eq!(r.header("x-correlation-id"), Some("corr-42"));
    let sent = sent(&s);
    assert_eq!(sent.len(), 1);
    let envelope: Value = serde_json::from_str(&sent[0].body).unwrap_or(Value::Null);
    assert_eq!(envelope["correlationId"], "corr-42");
    assert_eq!(envelope["events"][0]["leadId"], "user:u1");
    assert_eq!(envelope["events"].as_array().map(Vec::len), Some(1));
    assert_eq!(sent[0].event_type.as_deref(), Some("PAGE_VIEW"));
    assert_eq!(sent[0].events, 1);
    let totals = s.counters.totals().await.unwrap_or_default();
    assert_eq!(totals.accepted_by_source.get("api"), Some(&1));
}

#[tokio::test]
async fn unsafe_correlation_ids_are_replaced() {
    let r = service()
        .handle(request(
            "POST",
            "/v1/events",
            &[INGEST, ("x-correlation-id", "<script>")],
            r#"{"type":"A"}"#,
        ))
        .await;
    let id = r.header("x-correlation-id").unwrap_or_default().to_owned();
    assert!(uuid::Uuid::parse_str(&id).is_ok(), "{id}");
}

#[tokio::test]
async fn auth_errors() {
    let s = service();
    let ev = r#"{"type":"A"}"#;
    let none = s.handle(request("POST", "/v1/events", &[], ev)).await;
    assert_eq!(
        (none.status, body(&none)["error"]["code"].clone()),
        (401, json!("UNAUTHORIZED"))
    );
    assert_eq!(body(&none)["requestId"], "req-1");
    let unknown = s
        .handle(request(
            "POST",
            "/v1/events",
            &[("authorization", "Bearer guess")],
            ev,
        ))
        .await;
    assert_eq!(unknown.status, 401);
    let read = s
        .handle(request(
            "POST",
            "/v1/events",
            &[("authorization", "Bearer read-key")],
            ev,
        ))
        .await;
    assert_eq!(
        (read.status, body(&read)["error"]["code"].clone()),
        (403, json!("FORBIDDEN"))
    );
    assert!(sent(&s).is_empty());
}

#[tokio::test]
async fn request_errors_have_the_error_shape() {
    let s = service();
    let cases: Vec<(HttpRequest, u16, &str)> = vec![
        (
            request("POST", "/v1/events", &[INGEST], "{not json"),
            400,
            "INVALID_JSON",
        ),
        (
            request(
                "POST",
                "/v1/events",
                &[INGEST],
                r#"{"type":"A","colour":"red"}"#,
            ),
            400,
            "VALIDATION_FAILED",
        ),
        (
            request("POST", "/v1/events", &[INGEST], r#"[{"type":"A"}]"#),
            400,
            "VALIDATION_FAILED",
        ),
        (
            request(
                "POST",
                "/v1/events",
                &[INGEST, ("content-type", "text/plain")],
                "x",
            ),
            415,
            "UNSUPPORTED_MEDIA_TYPE",
        ),
        (
            request(
                "POST",
                "/v1/events",
                &[INGEST, ("content-encoding", "br")],
                "x",
            ),
            415,
            "UNSUPPORTED_MEDIA_TYPE",
        ),
        (
            request("POST", "/v1/events/csv", &[INGEST], "type\nA\n"),
            415,
            "UNSUPPORTED_MEDIA_TYPE",
        ),
        (
            request(
                "POST",
                "/v1/events",
                &[INGEST],
                vec![b' '; SINGLE_LIMIT + 1],
            ),
            413,
            "PAYLOAD_TOO_LARGE",
        ),
        (
            request("POST", "/v1/events/batch", &[INGEST], "[]"),
            400,
            "VALIDATION_FAILED",
        ),
        (
            request("POST", "/v1/events/batch", &[INGEST], r#"{"type":"A"}"#),
            400,
            "VALIDATION_FAILED",
        ),
        (
            request("GET", "/v1/events", &[INGEST], ""),
            405,
            "METHOD_NOT_ALLOWED",
        ),
        (request("POST", "/v1/nope", &[INGEST], ""), 404, "NOT_FOUND"),
        (
            request("POST", "/v1/webhooks/unknown", &[], "{}"),
            404,
            "NOT_FOUND",
        ),
    ];
    for (req, status, code) in cases {
        let label = format!("{} {}", req.method, req.path);
        let r = s.handle(req).await;
        assert_eq!(r.status, status, "{label}: {}", r.body);
        let b = body(&r);
        assert_eq!(b["error"]["code"], code, "{label}");
        assert!(
            b["error"]["message"].is_string() && b["error"]["details"].is_array(),
            "{label}"
        );
    }
    let r = s.handle(request("GET", "/v1/events", &[INGEST], "")).await;
    assert_eq!(r.header("allow"), Some("POST"));
    let too_many = format!(
        "[{}]",
        vec![r#"{"type":"A"}"#; MAX_BATCH_EVENTS + 1].join(",")
    );
    let r = s
        .handle(request("POST", "/v1/events/batch", &[INGEST], too_many))
        .await;
    assert_eq!(r.status, 413);
    assert!(sent(&s).is_empty());
}

#[tokio::test]
async fn validation_details_name_each_field() {
    let r = service()
        .handle(request(
            "POST",
            "/v1/events",
            &[INGEST],
            r#"{"timestamp":"soon","lead":{"email":"x"}}"#,
        ))
        .await;
    assert_eq!(r.status, 400);
    let details = body(&r)["error"]["details"].clone();
    let paths: Vec<&str> = details
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|d| d["path"].as_str())
        .collect();
    assert_eq!(paths, vec!["/type", "/timestamp", "/lead/email"]);
}

#[tokio::test]
async fn batch_reports_each_item_and_one_bad_item_rejects_nothing_else() {
    let s = service();
    let r = s
        .handle(request(
            "POST",
            "/v1/events/batch",
            &[INGEST],
            r#"[{"type":"A","eventId":"a"},{"eventType":"B"},{"type":"1bad"},{"event_type":"C","source":"shop"}]"#,
        ))
        .await;
    assert_eq!(r.status, 207, "{}", r.body);
    let b = body(&r);
    assert_eq!(
        (b["accepted"].clone(), b["rejected"].clone()),
        (json!(3), json!(1))
    );
    assert_eq!(
        b["results"][0],
        json!({"index": 0, "eventId": "a", "status": "queued"})
    );
    assert_eq!(b["results"][2]["status"], "rejected");
    assert_eq!(b["results"][2]["index"], 2);
    assert_eq!(b["results"][2]["error"]["details"][0]["path"], "/type");
    // The three accepted events travel in one message, in order.
    let sent = sent(&s);
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].events, 3);
    let envelope: Value = serde_json::from_str(&sent[0].body).unwrap_or(Value::Null);
    let types: Vec<&str> = envelope["events"]
        .as_array()
        .map(|events| events.iter().filter_map(|e| e["type"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(types, ["A", "B", "C"]);
    assert_eq!(envelope["events"][0]["eventId"], "a");
    let totals = s.counters.totals().await.unwrap_or_default();
    assert_eq!(totals.accepted_by_source.get("api"), Some(&2));
    assert_eq!(totals.accepted_by_source.get("shop"), Some(&1));
    assert_eq!(totals.rejected, 1);
}

#[tokio::test]
async fn all_valid_batch_is_202() {
    let r = service()
        .handle(request(
            "POST",
            "/v1/events/batch",
            &[INGEST],
            r#"[{"type":"A"},{"type":"B"}]"#,
        ))
        .await;
    assert_eq!(r.status, 202);
    assert_eq!(body(&r)["accepted"], 2);
}

#[tokio::test]
async fn ndjson_lines_fail_individually() {
    let s = service();
    let r = s
        .handle(request(
            "POST",
            "/v1/events/batch",
            &[INGEST, ("content-type", "application/x-ndjson")],
            "{\"type\":\"A\"}\n\n{oops\n{\"type\":\"B\"}\n",
        ))
        .await;
    assert_eq!(r.status, 207);
    let b = body(&r);
    assert_eq!(b["results"][1]["error"]["code"], "INVALID_JSON");
    assert_eq!(b["results"][2]["status"], "queued");
}

#[tokio::test]
async fn csv_rows_are_numbered_from_two() {
    let s = service();
    let csv = "type,email,revenue,currency\nPURCHASE,a@b.co,10.00,USD\nPURCHASE,not-an-email,1,USD\nREFUND,c@d.io,-5,EUR\n";
    let r = s
        .handle(request(
            "POST",
            "/v1/events/csv",
            &[INGEST, ("content-type", "text/csv")],
            csv,
        ))
        .await;
    assert_eq!(r.status, 207, "{}", r.body);
    let b = body(&r);
    assert_eq!(b["results"][1]["row"], 3);
    assert_eq!(
        b["results"][1]["error"]["details"][0]["path"],
        "/lead/email"
    );
    assert_eq!(
        b["results"][2],
        json!({"row": 4, "eventId": b["results"][2]["eventId"], "status": "queued"})
    );
}

#[tokio::test]
async fn gzip_bodies_are_inflated_and_bombs_refused() {
    let gzip = |data: &[u8]| {
        let mut enc = GzEncoder::new(Vec::new(), Compression::default());
        let _ = enc.write_all(data);
        enc.finish().unwrap_or_default()
    };
    let s = service();
    let ok = s
        .handle(request(
            "POST",
            "/v1/events",
            &[INGEST, ("content-encoding", "gzip")],
            gzip(br#"{"type":"Z"}"#),
        ))
        .await;
    assert_eq!(ok.status, 202);
    let mut bomb_json = b"[".to_vec();
    bomb_json.extend(vec![b' '; 20 * 1024 * 1024]);
    let bomb = gzip(&bomb_json);
    let r = s
        .handle(request(
            "POST",
            "/v1/events/batch",
            &[INGEST, ("content-encoding", "gzip")],
            bomb,
        ))
        .await;
    assert_eq!(
        (r.status, body(&r)["error"]["code"].clone()),
        (413, json!("PAYLOAD_TOO_LARGE"))
    );
}

#[tokio::test]
async fn queue_failure_is_503_never_202() {
    let s = Ingest::new(
        config(),
        FakeQueue {
            failing_type: Some("B"),
            ..Default::default()
        },
        FakeCounters::default(),
    );
    let r = s
        .handle(request(
            "POST",
            "/v1/events/batch",
            &[INGEST],
            r#"[{"type":"A"},{"type":"B"}]"#,
        ))
        .await;
    assert_eq!(r.status, 503);
    let b = body(&r);
    assert_eq!(b["error"]["code"], "SERVICE_UNAVAILABLE");
    // Both travel in one message, so both are to be retried.
    let paths: Vec<&str> = b["error"]["details"]
        .as_array()
        .map(|d| d.iter().filter_map(|d| d["path"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(paths, ["/results/0", "/results/1"]);
    let single = s
        .handle(request("POST", "/v1/events", &[INGEST], r#"{"type":"B"}"#))
        .await;
    assert_eq!(single.status, 503);
    assert!(!single.body.contains("queue url"));
}

fn facebook_body() -> String {
    let now = Utc::now().timestamp();
    json!({"object": "page", "entry": [{"id": "1", "time": now, "changes": [
        {"field": "leadgen", "value": {"leadgen_id": "444", "page_id": "1", "form_id": "2", "adgroup_id": "3", "ad_id": "999", "created_time": now}},
        {"field": "feed", "value": {"item": "status"}},
        {"field": "leadgen", "value": {"page_id": "1"}}
    ]}]})
    .to_string()
}

#[tokio::test]
async fn facebook_leadgen_changes_become_events() {
    let s = service();
    let b = facebook_body();
    let sig = sign_facebook("fb-secret", b.as_bytes());
    let r = s
        .handle(request(
            "POST",
            "/v1/webhooks/facebook",
            &[("x-hub-signature-256", &sig)],
            b.clone(),
        ))
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        body(&r),
        json!({"received": 1, "rejected": 1, "ignored": 1})
    );
    let sent = sent(&s);
    let envelope: Value = serde_json::from_str(&sent[0].body).unwrap_or(Value::Null);
    let e = &envelope["events"][0];
    assert_eq!(
        (e["eventId"].clone(), e["leadId"].clone()),
        (json!("fb:444"), json!("fb:444"))
    );
    assert_eq!(
        (
            e["type"].clone(),
            e["source"].clone(),
            e["campaignId"].clone()
        ),
        (json!("FORM_SUBMISSION"), json!("facebook"), json!("999"))
    );
    assert_eq!(e["payload"]["form_id"], "2");

    let tampered = b.replace("444", "445");
    let r = s
        .handle(request(
            "POST",
            "/v1/webhooks/facebook",
            &[("x-hub-signature-256", &sig)],
            tampered,
        ))
        .await;
    assert_eq!(
        (r.status, body(&r)["error"]["code"].clone()),
        (403, json!("INVALID_SIGNATURE"))
    );
    let r = s
        .handle(request("POST", "/v1/webhooks/facebook", &[], b))
        .await;
    assert_eq!(r.status, 401);
}

#[tokio::test]
async fn facebook_handshake() {
    let s = service();
    let mut req = request("GET", "/v1/webhooks/facebook", &[], "");
    req.query = [
        ("hub.mode", "subscribe"),
        ("hub.verify_token", "verify-me"),
        ("hub.challenge", "1158201444"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    let r = s.handle(req.clone()).await;
    assert_eq!(
        (r.status, r.body.as_str(), r.header("content-type")),
        (200, "1158201444", Some("text/plain; charset=utf-8"))
    );
    req.query.insert("hub.verify_token".into(), "wrong".into());
    assert_eq!(s.handle(req.clone()).await.status, 403);
    req.query
        .insert("hub.verify_token".into(), "verify-me".into());
    req.query.insert("hub.challenge".into(), "<b>hi</b>".into());
    assert_eq!(s.handle(req).await.status, 400);
}

#[tokio::test]
async fn tiktok_and_generic_signatures() {
    let s = service();
    let now = Utc::now().timestamp();
    let tiktok = r#"[{"eventId":"tt-1","source":"tiktok","eventType":"ad.click","data":{"user":{"userId":"u1"},"engagement":{"campaignId":"c1"}}}]"#;
    let sig = sign_timestamped("tt-secret", "s", now, tiktok.as_bytes());
    let r = s
        .handle(request(
            "POST",
            "/v1/webhooks/tiktok",
            &[("tiktok-signature", &sig)],
            tiktok,
        ))
        .await;
    assert_eq!(r.status, 202, "{}", r.body);
    let stale = sign_timestamped("tt-secret", "s", now - 301, tiktok.as_bytes());
    let r = s
        .handle(request(
            "POST",
            "/v1/webhooks/tiktok",
            &[("tiktok-signature", &stale)],
            tiktok,
        ))
        .await;
    assert_eq!(r.status, 403);

    let generic = r#"{"type":"order.paid","revenue":{"amount":"5.00"}}"#;
    // A signature under either of the source's secrets is accepted (rotation).
    let old = sign_timestamped("old-secret", "v1", now, generic.as_bytes());
    let r = s
        .handle(request(
            "POST",
            "/v1/webhooks/shop",
            &[("x-signature", &old)],
            generic,
        ))
        .await;
    assert_eq!(r.status, 202, "{}", r.body);
    let wrong = sign_timestamped("tt-secret", "v1", now, generic.as_bytes());
    let r = s
        .handle(request(
            "POST",
            "/v1/webhooks/shop",
            &[("x-signature", &wrong)],
            generic,
        ))
        .await;
    assert_eq!(r.status, 403);
    let sources: Vec<String> = sent(&s).into_iter().filter_map(|m| m.source).collect();
    assert_eq!(sources, vec!["tiktok", "shop"]);
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut enc = GzEncoder::new(Vec::new(), Compression::default());
    let _ = enc.write_all(data);
    enc.finish().unwrap_or_default()
}

#[tokio::test]
async fn webhooks_verify_the_raw_bytes_before_inflating_them() {
    let s = service();
    let now = Utc::now().timestamp();
    let event = br#"{"type":"order.paid"}"#;
    let compressed = gzip(event);
    let post = |signature: String, body: Vec<u8>| {
        request(
            "POST",
            "/v1/webhooks/shop",
            &[("x-signature", &signature), ("content-encoding", "gzip")],
            body,
        )
    };
    // Signed over the bytes sent (compressed): accepted and inflated.
    let raw_signed = sign_timestamped("new-secret", "v1", now, &compressed);
    let r = s.handle(post(raw_signed, compressed.clone())).await;
    assert_eq!(r.status, 202, "{}", r.body);
    // Signed over the inflated JSON: not what was received.
    let inflated_signed = sign_timestamped("new-secret", "v1", now, event);
    let r = s.handle(post(inflated_signed, compressed)).await;
    assert_eq!(r.status, 403, "{}", r.body);
    // A bomb without a valid signature is refused by its signature (403), never inflated to
    // the size limit first (which would answer 413).
    let bomb = gzip(&vec![b' '; 8 * 1024 * 1024]);
    let forged = sign_timestamped("guess", "v1", now, &bomb);
    let r = s.handle(post(forged, bomb)).await;
    assert_eq!(
        (r.status, body(&r)["error"]["code"].clone()),
        (403, json!("INVALID_SIGNATURE"))
    );
    // The raw body is bounded before it is hashed.
    let huge = vec![b' '; SINGLE_LIMIT + 1];
    let signed = sign_timestamped("new-secret", "v1", now, &huge);
    let r = s
        .handle(request(
            "POST",
            "/v1/webhooks/shop",
            &[("x-signature", &signed)],
            huge,
        ))
        .await;
    assert_eq!(r.status, 413);
}

#[tokio::test]
async fn a_batch_result_lists_at_most_a_thousand_error_details() {
    // 10,000 rows, each with nine invalid fields: about 90,000 details in all.
    let row = "a b,1x,not-a-time,BAD SOURCE,not-an-email,sideways,abc,usd1";
    let csv = format!(
        "eventId,type,timestamp,source,email,funnelStage,revenue,currency\n{}",
        format!("{row}\n").repeat(MAX_CSV_ROWS)
    );
    let r = service()
        .handle(request(
            "POST",
            "/v1/events/csv",
            &[INGEST, ("content-type", "text/csv")],
            csv,
        ))
        .await;
    assert_eq!(r.status, 207, "{}", &r.body[..r.body.len().min(500)]);
    let b = body(&r);
    let results = b["results"].as_array().cloned().unwrap_or_default();
    assert_eq!(results.len(), MAX_CSV_ROWS, "a result for every row");
    let listed: usize = results
        .iter()
        .map(|r| r["error"]["details"].as_array().map_or(0, Vec::len))
        .sum();
    let omitted: u64 = results
        .iter()
        .filter_map(|r| r["error"]["omittedDetails"].as_u64())
        .sum();
    let per_row = results[0]["error"]["details"]
        .as_array()
        .map_or(0, Vec::len);
    assert!(per_row >= 7, "{}", results[0]);
    assert_eq!(listed, 1_000);
    assert_eq!(listed as u64 + omitted, (per_row * MAX_CSV_ROWS) as u64);
    assert!(
        r.body.len() < 2 * 1024 * 1024,
        "{} bytes answered",
        r.body.len()
    );
}

#[tokio::test]
async fn an_error_lists_at_most_a_hundred_details() {
    // One event with 300 unknown fields.
    let mut event = serde_json::Map::new();
    event.insert("type".into(), json!("A"));
    for i in 0..300 {
        event.insert(format!("f{i}"), json!(1));
    }
    let r = service()
        .handle(request(
            "POST",
            "/v1/events",
            &[INGEST],
            serde_json::to_vec(&event).unwrap_or_default(),
        ))
        .await;
    assert_eq!(r.status, 400);
    let b = body(&r);
    assert_eq!(b["error"]["details"].as_array().map(Vec::len), Some(100));
    assert_eq!(b["error"]["omittedDetails"], 200);
    assert_eq!(b["error"]["message"], "300 fields are invalid");
}

#[tokio::test]
async fn an_oversized_json_batch_stops_at_the_first_item_past_the_limit() {
    let items = vec![r#"{"type":"A"}"#; MAX_BATCH_EVENTS + 1].join(",");
    // Whatever follows the 501st item is never parsed.
    let body = format!("[{items}, this tail is not JSON");
    let r = service()
        .handle(request("POST", "/v1/events/batch", &[INGEST], body))
        .await;
    assert_eq!((r.status, body_code(&r)), (413, json!("PAYLOAD_TOO_LARGE")));
}

fn body_code(r: &HttpResponse) -> Value {
    body(r)["error"]["code"].clone()
}

fn event_ids(r: &HttpResponse) -> Vec<Value> {
    body(r)["results"]
        .as_array()
        .map(|results| results.iter().map(|r| r["eventId"].clone()).collect())
        .unwrap_or_default()
}

#[tokio::test]
async fn a_request_retried_with_its_idempotency_key_derives_the_same_ids() {
    let s = service();
    let batch = r#"[{"type":"A"},{"type":"B","eventId":"own-1"},{"type":"C"}]"#;
    let post = |key: Option<&'static str>| {
        let mut headers = vec![INGEST];
        if let Some(key) = key {
            headers.push(("idempotency-key", key));
        }
        request("POST", "/v1/events/batch", &headers, batch)
    };
    let first = s.handle(post(Some("order-42"))).await;
    assert_eq!(first.status, 202, "{}", first.body);
    let ids = event_ids(&first);
    assert_eq!(ids[1], json!("own-1"));
    assert!(ids[0]
        .as_str()
        .is_some_and(|id| id.starts_with("ik:") && id.ends_with(".0")));
    assert_eq!(event_ids(&s.handle(post(Some("order-42"))).await), ids);
    let other = event_ids(&s.handle(post(Some("order-43"))).await);
    assert_ne!(other[0], ids[0]);
    // Without a key every retry is new.
    let a = event_ids(&s.handle(post(None)).await);
    let b = event_ids(&s.handle(post(None)).await);
    assert_ne!(a[0], b[0]);

    // The single route too; a key that is not printable ASCII is a 400 naming the header.
    let single = |key: &'static str| {
        request(
            "POST",
            "/v1/events",
            &[INGEST, ("idempotency-key", key)],
            r#"{"type":"A"}"#,
        )
    };
    let one = body(&s.handle(single("k1")).await)["eventId"].clone();
    assert_eq!(body(&s.handle(single("k1")).await)["eventId"], one);
    let bad = s.handle(single("")).await;
    assert_eq!(bad.status, 400);
    assert_eq!(body(&bad)["error"]["details"][0]["path"], "Idempotency-Key");
}

#[tokio::test]
async fn webhook_id_prefixes_are_reserved_to_their_routes() {
    let s = service();
    let single = s
        .handle(request(
            "POST",
            "/v1/events",
            &[INGEST],
            r#"{"type":"FORM_SUBMISSION","eventId":"fb:1234"}"#,
        ))
        .await;
    assert_eq!(single.status, 400, "{}", single.body);
    assert_eq!(body(&single)["error"]["details"][0]["path"], "/eventId");
    let batch = s
        .handle(request(
            "POST",
            "/v1/events/batch",
            &[INGEST],
            r#"[{"type":"A","eventId":"tt:1"},{"type":"A","eventId":"wh:shop:1"},{"type":"A","eventId":"ok:1"}]"#,
        ))
        .await;
    assert_eq!(
        body(&batch)["results"]
            .as_array()
            .map(|r| r.iter().map(|r| r["status"].clone()).collect::<Vec<_>>()),
        Some(vec![json!("rejected"), json!("rejected"), json!("queued")])
    );

    // Webhook events carry their route's prefix; those without an id derive it from the
    // signed body, so a redelivery (even signed at another time) derives the same.
    let now = Utc::now().timestamp();
    let tiktok = r#"[{"eventId":"tt-1","source":"tiktok","eventType":"ad.click"},{"source":"tiktok","eventType":"ad.click"}]"#;
    let deliver = |t: i64| {
        let sig = sign_timestamped("tt-secret", "s", t, tiktok.as_bytes());
        request(
            "POST",
            "/v1/webhooks/tiktok",
            &[("tiktok-signature", &sig)],
            tiktok,
        )
    };
    let first = s.handle(deliver(now)).await;
    assert_eq!(first.status, 202, "{}", first.body);
    let ids = event_ids(&first);
    assert_eq!(ids[0], json!("tt:tt-1"));
    assert!(ids[1]
        .as_str()
        .is_some_and(|id| id.starts_with("tt:") && id.ends_with(".1")));
    assert_eq!(event_ids(&s.handle(deliver(now - 10)).await), ids);

    let generic = r#"{"type":"order.paid","eventId":"o-9"}"#;
    let sig = sign_timestamped("new-secret", "v1", now, generic.as_bytes());
    let r = s
        .handle(request(
            "POST",
            "/v1/webhooks/shop",
            &[("x-signature", &sig)],
            generic,
        ))
        .await;
    assert_eq!(event_ids(&r), vec![json!("wh:shop:o-9")]);
}

#[tokio::test]
async fn sources_not_counted_by_name_share_one_counter() {
    let s = service();
    // A thousand client-chosen sources would each become a counter attribute and a series.
    let events: Vec<Value> = (0..1000)
        .map(|i| json!({"type": "A", "source": format!("src-{i}")}))
        .chain([json!({"type": "A", "source": "web"}), json!({"type": "A"})])
        .collect();
    for chunk in events.chunks(MAX_BATCH_EVENTS) {
        let r = s
            .handle(request(
                "POST",
                "/v1/events/batch",
                &[INGEST],
                serde_json::to_vec(chunk).unwrap_or_default(),
            ))
            .await;
        assert_eq!(r.status, 202, "{}", r.body);
    }
    let totals = s.counters.totals().await.unwrap_or_default();
    assert_eq!(
        totals.accepted_by_source,
        std::collections::BTreeMap::from([
            ("(other)".to_owned(), 1000),
            ("api".to_owned(), 1),
            ("web".to_owned(), 1),
        ])
    );
    // The events keep their source; only the counter is shared.
    assert!(sent(&s)
        .iter()
        .any(|m| m.body.contains(r#""source":"src-7""#)));
}

/// A secret store that answers with `value`, or fails when it is `None`.
struct FixedSecret(Option<String>);

#[async_trait]
impl crate::secrets::SecretStore for FixedSecret {
    async fn secret_string(&self) -> Result<String, StoreError> {
        self.0
            .clone()
            .ok_or_else(|| StoreError::Unavailable("AccessDeniedException".into()))
    }
}

#[tokio::test]
async fn keys_and_webhook_secrets_come_from_the_secret_store_when_one_is_given() {
    let secret = json!({
        "apiKeyDigests": format!("{}:ingest", ApiKeys::digest("stored-key")),
        "webhookSecrets": "crm=stored-secret"
    })
    .to_string();
    let s = service().with_secrets(crate::secrets::SecretsCache::from_store(
        std::sync::Arc::new(FixedSecret(Some(secret))),
        crate::secrets::SECRETS_TTL,
    ));
    let post = |key: &str| {
        request(
            "POST",
            "/v1/events",
            &[("authorization", &format!("Bearer {key}"))],
            r#"{"type":"A"}"#,
        )
    };
    assert_eq!(s.handle(post("stored-key")).await.status, 202);
    // The config's own keys and secrets no longer count.
    assert_eq!(s.handle(post("ingest-key")).await.status, 401);
    let now = Utc::now().timestamp();
    let body = r#"{"type":"deal.won"}"#;
    let sig = sign_timestamped("stored-secret", "v1", now, body.as_bytes());
    let r = s
        .handle(request(
            "POST",
            "/v1/webhooks/crm",
            &[("x-signature", &sig)],
            body,
        ))
        .await;
    assert_eq!(r.status, 202, "{}", r.body);
    let old = sign_timestamped("old-secret", "v1", now, body.as_bytes());
    let r = s
        .handle(request(
            "POST",
            "/v1/webhooks/shop",
            &[("x-signature", &old)],
            body,
        ))
        .await;
    assert_eq!(r.status, 404, "shop is not in the stored secret");

    // A store that cannot be read: 503 naming the secrets, nothing queued.
    let down = service().with_secrets(crate::secrets::SecretsCache::from_store(
        std::sync::Arc::new(FixedSecret(None)),
        crate::secrets::SECRETS_TTL,
    ));
    let r = down.handle(post("ingest-key")).await;
    assert_eq!(
        (r.status, body_code(&r)),
        (503, json!("SERVICE_UNAVAILABLE"))
    );
    assert!(!r.body.contains("AccessDenied"), "{}", r.body);
    assert!(sent(&down).is_empty());
}

#[tokio::test]
async fn the_replaced_systems_ingest_paths_are_aliases_of_the_v1_routes() {
    let mut legacy = config();
    legacy.webhook_secrets = WebhookSecrets::parse("webhook=legacy-secret").unwrap_or_default();
    let s = Ingest::new(legacy, FakeQueue::default(), FakeCounters::default());
    let event = r#"{"type":"PAGE_VIEW","userId":"u1"}"#;
    let post = |path: &str, key: Option<&'static str>| {
        let mut headers = vec![INGEST, ("content-type", "application/json")];
        if let Some(key) = key {
            headers.push(("idempotency-key", key));
        }
        request("POST", path, &headers, event)
    };

    // The aggregation service's path answers as v1 does.
    let api = s.handle(post("/api/events", None)).await;
    assert_eq!(api.status, 202, "{}", api.body);
    assert_eq!(body(&api)["status"], "queued");
    // EventFlow's answers in its own shape, and is the same route: one idempotency key derives
    // the same id through either path.
    let v1 = body(&s.handle(post("/v1/events", Some("k-7"))).await);
    let flow = s.handle(post("/events", Some("k-7"))).await;
    assert_eq!(flow.status, 201, "{}", flow.body);
    let flow = body(&flow);
    assert_eq!(
        flow,
        json!({
            "success": true,
            "eventId": v1["eventId"],
            "message": "Event accepted and queued for processing",
        })
    );
    // Their refusals are Tally's: the scope, the method, one event per request.
    let read = request(
        "POST",
        "/events",
        &[("authorization", "Bearer read-key")],
        event,
    );
    assert_eq!(s.handle(read).await.status, 403);
    assert_eq!(
        s.handle(request("GET", "/api/events", &[INGEST], ""))
            .await
            .status,
        405
    );
    let array = s
        .handle(request(
            "POST",
            "/events",
            &[INGEST, ("content-type", "application/json")],
            format!("[{event}]"),
        ))
        .await;
    assert_eq!(body_code(&array), json!("VALIDATION_FAILED"));

    // The webhook reporter's path is the generic webhook of source `webhook`, signed as it is.
    let now = Utc::now().timestamp();
    let signed = sign_timestamped("legacy-secret", "v1", now, event.as_bytes());
    let hook = s
        .handle(request(
            "POST",
            "/api/webhook",
            &[("x-signature", &signed)],
            event,
        ))
        .await;
    assert_eq!(hook.status, 202, "{}", hook.body);
    assert!(
        event_ids(&hook)[0]
            .as_str()
            .is_some_and(|id| id.starts_with("wh:webhook:")),
        "{}",
        hook.body
    );
    let forged = sign_timestamped("other-secret", "v1", now, event.as_bytes());
    let refused = s
        .handle(request(
            "POST",
            "/api/webhook",
            &[("x-signature", &forged)],
            event,
        ))
        .await;
    assert_eq!(refused.status, 403);
    let sources: Vec<String> = sent(&s).into_iter().filter_map(|m| m.source).collect();
    assert_eq!(sources, vec!["api", "api", "api", "webhook"]);

    // Without a secret for source `webhook`, the path is unknown, as `/v1/webhooks/webhook` is.
    let unsigned = service()
        .handle(request(
            "POST",
            "/api/webhook",
            &[("x-signature", &signed)],
            event,
        ))
        .await;
    assert_eq!(unsigned.status, 404);
}

#[tokio::test]
async fn a_track_key_posts_allowed_types_from_its_origins_only() {
    let mut tracked = config();
    tracked.api_keys = ApiKeys::parse(&format!(
        "{}:ingest,{}:track=https://shop.example",
        ApiKeys::digest("ingest-key"),
        ApiKeys::digest("pk-shop")
    ))
    .unwrap_or_default();
    let s = Ingest::new(tracked, FakeQueue::default(), FakeCounters::default());
    const ORIGIN: (&str, &str) = ("origin", "https://shop.example");
    const TRACK: (&str, &str) = ("authorization", "Bearer pk-shop");
    let with_query = |mut r: HttpRequest, query: &[(&str, &str)]| {
        r.query = query
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        r
    };

    let one = s
        .handle(request(
            "POST",
            "/v1/events",
            &[TRACK, ORIGIN],
            r#"{"type":"PAGE_VIEW"}"#,
        ))
        .await;
    assert_eq!(one.status, 202, "{}", one.body);
    let batch =
        r#"[{"type":"FORM_SUBMISSION"},{"type":"PURCHASE"},{"type":"PAGE_VIEW","source":"api"}]"#;
    let mixed = s
        .handle(request("POST", "/v1/events/batch", &[TRACK, ORIGIN], batch))
        .await;
    assert_eq!(mixed.status, 207, "{}", mixed.body);
    let results = body(&mixed)["results"].clone();
    assert_eq!(results[0]["status"], "queued");
    for (i, path) in [(1, "/type"), (2, "/source")] {
        assert_eq!(results[i]["error"]["code"], "FORBIDDEN", "{results}");
        assert_eq!(results[i]["error"]["details"][0]["path"], path, "{results}");
    }
    let sources: Vec<String> = sent(&s).into_iter().filter_map(|m| m.source).collect();
    assert_eq!(
        sources,
        ["web", "web"],
        "a track key's events have source web"
    );

    // Refused: another origin, no origin, a type it may not post, CSV.
    for (headers, path, body_text, status) in [
        (
            vec![TRACK, ("origin", "https://evil.example")],
            "/v1/events",
            r#"{"type":"PAGE_VIEW"}"#,
            403,
        ),
        (vec![TRACK], "/v1/events", r#"{"type":"PAGE_VIEW"}"#, 403),
        (
            vec![TRACK, ORIGIN],
            "/v1/events",
            r#"{"type":"PURCHASE"}"#,
            403,
        ),
        (
            vec![TRACK, ORIGIN, ("content-type", "text/csv")],
            "/v1/events/csv",
            "type\nPAGE_VIEW\n",
            403,
        ),
    ] {
        let r = s.handle(request("POST", path, &headers, body_text)).await;
        assert_eq!(r.status, status, "{headers:?} {path}: {}", r.body);
    }
    assert_eq!(sent(&s).len(), 2, "nothing refused was queued");

    // A beacon: the key and the idempotency key as parameters, the body as text/plain. It
    // derives the ids a header-sent retry of the same batch derives.
    let events = r#"[{"type":"PAGE_VIEW"},{"type":"EMAIL_OPEN"}]"#;
    let beacon = with_query(
        request(
            "POST",
            "/v1/events/batch",
            &[ORIGIN, ("content-type", "text/plain;charset=UTF-8")],
            events,
        ),
        &[("key", "pk-shop"), ("idempotencyKey", "b-1")],
    );
    let beaconed = s.handle(beacon).await;
    assert_eq!(beaconed.status, 202, "{}", beaconed.body);
    let fetched = s
        .handle(request(
            "POST",
            "/v1/events/batch",
            &[TRACK, ORIGIN, ("idempotency-key", "b-1")],
            events,
        ))
        .await;
    assert_eq!(event_ids(&fetched), event_ids(&beaconed));
    assert!(event_ids(&beaconed)[0]
        .as_str()
        .is_some_and(|id| id.starts_with("ik:")));

    // Only a track key may travel in the URL; a key in both places is a 400; text/plain is
    // JSON for track keys only.
    let secret_in_url = with_query(
        request("POST", "/v1/events/batch", &[ORIGIN], events),
        &[("key", "ingest-key")],
    );
    assert_eq!(s.handle(secret_in_url).await.status, 401);
    let single_in_url = with_query(
        request("POST", "/v1/events", &[ORIGIN], r#"{"type":"PAGE_VIEW"}"#),
        &[("key", "pk-shop")],
    );
    assert_eq!(
        s.handle(single_in_url).await.status,
        401,
        "beacons post batches"
    );
    let both = with_query(
        request("POST", "/v1/events/batch", &[TRACK, ORIGIN], events),
        &[("key", "pk-shop")],
    );
    assert_eq!(s.handle(both).await.status, 400);
    let plain = s
        .handle(request(
            "POST",
            "/v1/events/batch",
            &[INGEST, ("content-type", "text/plain")],
            events,
        ))
        .await;
    assert_eq!(plain.status, 415);
}
