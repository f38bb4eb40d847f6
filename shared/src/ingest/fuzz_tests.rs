//! Every ingest parser fuzzed through the real routes: arbitrary bodies (bytes, JSON of any
//! shape with the event's field names, CSV-like text), content types and encodings, keys,
//! signature headers and idempotency keys. An answer is a success or a 4xx in the error shape,
//! never a panic or a 5xx (the queue here accepts everything).

use crate::error::is_error_shape;
use proptest::prelude::*;
use serde_json::{Map, Value};

use super::tests::{request, service};

const FIELDS: [&str; 16] = [
    "eventId",
    "type",
    "eventType",
    "timestamp",
    "occurredAt",
    "source",
    "leadId",
    "userId",
    "lead",
    "email",
    "revenue",
    "amount",
    "currency",
    "user",
    "payload",
    "data",
];

fn json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        "\\PC{0,40}".prop_map(Value::from),
        Just(Value::from("2026-11-01T00:00:00Z")),
        Just(Value::from("fb:1")),
    ];
    leaf.prop_recursive(4, 64, 6, |inner| {
        let key = prop_oneof![
            (0..FIELDS.len()).prop_map(|i| FIELDS[i].to_owned()),
            "[a-z]{1,8}",
        ];
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec((key, inner), 0..8)
                .prop_map(|kv| Value::Object(kv.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

fn body() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..400),
        json().prop_map(|v| v.to_string().into_bytes()),
        prop::collection::vec(json(), 0..4).prop_map(|lines| {
            lines
                .iter()
                .map(Value::to_string)
                .collect::<Vec<_>>()
                .join("\n")
                .into_bytes()
        }),
        "(type|eventId|email|revenue|x|,){0,6}\n([ -~]{0,30}\n){0,5}".prop_map(String::into_bytes),
    ]
}

const PATHS: [(&str, &str); 8] = [
    ("POST", "/v1/events"),
    ("POST", "/v1/events/batch"),
    ("POST", "/v1/events/csv"),
    ("POST", "/v1/webhooks/facebook"),
    ("GET", "/v1/webhooks/facebook"),
    ("POST", "/v1/webhooks/tiktok"),
    ("POST", "/v1/webhooks/shop"),
    ("POST", "/v1/webhooks/nobody"),
];

fn header(options: &'static [&'static str]) -> impl Strategy<Value = Option<String>> {
    prop_oneof![
        Just(None),
        (0..options.len()).prop_map(move |i| Some(options[i].to_owned())),
        "[ -~]{0,80}".prop_map(Some),
    ]
}

fn signature() -> impl Strategy<Value = Option<String>> {
    prop_oneof![
        Just(None),
        "[ -~]{0,120}".prop_map(Some),
        (any::<i64>(), prop::collection::vec("[0-9a-g]{0,70}", 0..8)).prop_map(|(t, macs)| {
            Some(format!(
                "t={t},{}",
                macs.iter()
                    .map(|m| format!("v1={m},s={m}"))
                    .collect::<Vec<_>>()
                    .join(",")
            ))
        }),
        "[0-9a-f]{64}".prop_map(|m| Some(format!("sha256={m}"))),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 600, ..ProptestConfig::default() })]

    #[test]
    fn any_request_is_answered_without_a_panic_or_a_5xx(
        path in 0..PATHS.len(),
        body in body(),
        content_type in header(&["application/json", "application/x-ndjson", "text/csv"]),
        encoding in header(&["gzip", "identity", "br"]),
        authorization in header(&["Bearer ingest-key", "Bearer read-key"]),
        idempotency in header(&["retry-1"]),
        signature in signature(),
    ) {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        let (method, route) = PATHS[path];
        let mut headers: Vec<(&str, &str)> = Vec::new();
        for (name, value) in [
            ("content-type", &content_type),
            ("content-encoding", &encoding),
            ("authorization", &authorization),
            ("idempotency-key", &idempotency),
            ("x-signature", &signature),
            ("tiktok-signature", &signature),
            ("x-hub-signature-256", &signature),
        ] {
            if let Some(value) = value {
                headers.push((name, value));
            }
        }
        let response = runtime.block_on(service().handle(request(method, route, &headers, body)));
        prop_assert!(response.status < 500, "{method} {route}: {} {}", response.status, response.body);
        if response.status >= 400 {
            let answer: Value = serde_json::from_str(&response.body).unwrap_or(Value::Null);
            prop_assert!(is_error_shape(&answer), "{}", response.body);
        }
    }
}
