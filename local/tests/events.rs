//! The EventBridge emulator on its own: `PutEvents` answers per entry, rules route by pattern,
//! API-destination targets are retried on `5xx` and dead-lettered (to moto's SQS) on an answer
//! that is not retried.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};
use tally_local::events::{ApiTarget, EventBridgeEmulator, EventConfig, EventRule};

/// `/flaky` answers 500 twice, then 200; `/fail` always 400. Counts the calls to each.
async fn endpoint() -> Result<(SocketAddr, Arc<AtomicUsize>, Arc<AtomicUsize>)> {
    let flaky = Arc::new(AtomicUsize::new(0));
    let fail = Arc::new(AtomicUsize::new(0));
    let (f, x) = (flaky.clone(), fail.clone());
    let app = axum::Router::new()
        .route(
            "/flaky",
            axum::routing::post(move || {
                let f = f.clone();
                async move {
                    if f.fetch_add(1, Ordering::SeqCst) < 2 {
                        axum::http::StatusCode::INTERNAL_SERVER_ERROR
                    } else {
                        axum::http::StatusCode::OK
                    }
                }
            }),
        )
        .route(
            "/fail",
            axum::routing::post(move || {
                let x = x.clone();
                async move {
                    x.fetch_add(1, Ordering::SeqCst);
                    axum::http::StatusCode::BAD_REQUEST
                }
            }),
        );
    let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0))).await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok((addr, flaky, fail))
}

fn target(addr: SocketAddr, path: &str, dead_letter_queue_url: Option<String>) -> ApiTarget {
    ApiTarget {
        endpoint: format!("http://{addr}{path}"),
        method: "POST".into(),
        header: None,
        detail_only: false,
        max_retries: 5,
        max_age: Duration::from_secs(60),
        dead_letter_queue_url,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn targets_are_retried_on_5xx_and_dead_lettered_on_4xx() -> Result<()> {
    let emulators = tally_local::emulators()?;
    let sqs = aws_sdk_sqs::Client::new(&tally_local::sdk_config(&emulators.moto_endpoint));
    let dlq = sqs
        .create_queue()
        .queue_name(format!("events-dlq-{}", uuid::Uuid::new_v4().simple()))
        .send()
        .await?
        .queue_url
        .context("queue url")?;
    let (addr, flaky, fail) = endpoint().await?;
    let config = EventConfig {
        buses: HashMap::from([("Bus".into(), "bus".into())]),
        rules: vec![
            EventRule {
                name: "Flaky".into(),
                bus: "bus".into(),
                pattern: json!({"source": ["tally"], "detail": {"to": ["SQL"]}}),
                targets: vec![target(addr, "/flaky", None)],
            },
            EventRule {
                name: "Failing".into(),
                bus: "bus".into(),
                pattern: json!({"detail-type": ["lead.stage_changed"]}),
                targets: vec![target(addr, "/fail", Some(dlq.clone()))],
            },
        ],
    };
    let bus = EventBridgeEmulator::start(config, sqs.clone()).await?;
    let entry = |bus: &str, to: &str| {
        json!({"EventBusName": bus, "Source": "tally", "DetailType": "lead.stage_changed",
               "Detail": json!({"leadId": "l1", "to": to}).to_string()})
    };
    let answer: Value = reqwest::Client::new()
        .post(&bus.endpoint)
        .header("x-amz-target", "AWSEvents.PutEvents")
        .header("content-type", "application/x-amz-json-1.1")
        .body(json!({"Entries": [entry("bus", "SQL"), entry("nobus", "SQL")]}).to_string())
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(answer["FailedEntryCount"], 1, "{answer}");
    assert!(answer["Entries"][0]["EventId"].is_string(), "{answer}");
    assert_eq!(
        answer["Entries"][1]["ErrorCode"], "ResourceNotFoundException",
        "{answer}"
    );

    let deadline = Instant::now() + Duration::from_secs(30);
    let dead = loop {
        let received = sqs
            .receive_message()
            .queue_url(&dlq)
            .wait_time_seconds(1)
            .send()
            .await?;
        if let Some(message) = received.messages().first() {
            break message.body().unwrap_or_default().to_owned();
        }
        if Instant::now() > deadline {
            bail!("nothing was dead-lettered");
        }
    };
    let dead: Value = serde_json::from_str(&dead)?;
    assert_eq!(dead["detail"]["leadId"], "l1", "the envelope: {dead}");
    assert_eq!(dead["detail-type"], "lead.stage_changed");
    assert_eq!(fail.load(Ordering::SeqCst), 1, "a 400 is not retried");
    while flaky.load(Ordering::SeqCst) < 3 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(flaky.load(Ordering::SeqCst), 3, "two 500s, then delivered");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(flaky.load(Ordering::SeqCst), 3, "and never again");
    bus.stop();
    Ok(())
}
