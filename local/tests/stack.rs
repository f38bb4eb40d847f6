//! End-to-end: the whole local stack (emulators, real function binaries under the Runtime API
//! emulator, HTTP API, SQS mapping, schedules), driven over HTTP like a user would.
//!
//! The template is the project's own, with test-friendly settings: a 3 s visibility timeout and
//! function timeout (so retries come quickly), `MaxReceiveCount` 2 (through the parameter
//! override), a schedule on the process function, and the process binary built with the
//! `faults` feature so chosen events fail to store (`poison-*`) or the function crashes once.

mod common;

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};
use serde_yaml::Value as Yaml;
use tally::aws::DynamoEventStore;
use tally::store::{EventStatus, EventStore, StoredEvent};
use tally_local::runtime::{InvocationOutcome, InvocationReport};
use tally_local::up::{LocalStack, UpOptions, LOCAL_INGEST_KEY, LOCAL_READ_KEY};
use tokio::io::{AsyncBufReadExt, BufReader};

const FEATURES: &str = "process/faults";

/// The project's template with the test settings; `crash_marker` makes the process function
/// exit during its first invocation.
fn test_template(name: &str, crash_marker: Option<&PathBuf>) -> Result<PathBuf> {
    common::quick_retry_template(name, |process| {
        let variables = &mut process["Environment"]["Variables"];
        variables["TALLY_FAULT_FAIL_EVENT_PREFIXES"] = Yaml::from("poison-");
        if let Some(marker) = crash_marker {
            variables["TALLY_FAULT_EXIT_ONCE"] = Yaml::from(marker.display().to_string());
        }
        process["Events"]["Nightly"] = serde_yaml::from_str(
            "{Type: Schedule, Properties: {Schedule: 'cron(0 3 * * ? *)', Input: '{\"Records\": []}'}}",
        )?;
        Ok(())
    })
}

async fn start(name: &str, crash_marker: Option<&PathBuf>) -> Result<LocalStack> {
    start_with(name, crash_marker, Vec::new()).await
}

async fn start_with(
    name: &str,
    crash_marker: Option<&PathBuf>,
    parameters: Vec<(String, String)>,
) -> Result<LocalStack> {
    let mut all = vec![("MaxReceiveCount".to_owned(), "2".to_owned())];
    all.extend(parameters);
    LocalStack::start(UpOptions {
        parameters: all,
        cargo_features: vec![FEATURES.into()],
        ..UpOptions::new(test_template(name, crash_marker)?)
    })
    .await
}

fn store(stack: &LocalStack) -> Result<DynamoEventStore> {
    let config = tally_local::sdk_config(&stack.stack.dynamodb_endpoint);
    Ok(DynamoEventStore::new(
        &config,
        stack.stack.table("EventsTable")?.to_owned(),
    ))
}

async fn post(stack: &LocalStack, path: &str, body: Value) -> Result<(u16, Value)> {
    let response = reqwest::Client::new()
        .post(format!("http://{}{path}", stack.api_addr))
        .bearer_auth(LOCAL_INGEST_KEY)
        .json(&body)
        .send()
        .await?;
    let status = response.status().as_u16();
    Ok((status, response.json().await.unwrap_or(Value::Null)))
}

/// Polls until the event is stored with `status`.
async fn wait_for(
    store: &DynamoEventStore,
    event_id: &str,
    status: EventStatus,
) -> Result<StoredEvent> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(stored) = store.get(event_id).await? {
            if stored.status == status {
                return Ok(stored);
            }
        }
        if Instant::now() > deadline {
            bail!(
                "{event_id} did not reach {status:?}: {:?}",
                store.get(event_id).await?
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Waits until the invocation reports satisfy `done` (the last invocation may still be returning
/// its answer when its effect is already visible in the table).
async fn wait_reports(
    stack: &LocalStack,
    done: impl Fn(&[InvocationReport]) -> bool,
) -> Result<Vec<InvocationReport>> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let reports = stack.runtimes().reports();
        if done(&reports) {
            return Ok(reports);
        }
        if Instant::now() > deadline {
            bail!("invocation reports never matched: {reports:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn event_posted_over_http_is_stored() -> Result<()> {
    let stack = start("stored", None).await?;
    let (status, body) = post(
        &stack,
        "/v1/events",
        json!({"eventId": "http-1", "type": "PAGE_VIEW", "userId": "u1"}),
    )
    .await?;
    assert_eq!((status, body["status"].clone()), (202, json!("queued")));
    let stored = wait_for(&store(&stack)?, "http-1", EventStatus::Processed).await?;
    assert_eq!(stored.attempts, 1);
    let reports = wait_reports(&stack, |r| {
        r.iter().any(|r| r.function == "ProcessFunction")
    })
    .await?;
    assert!(
        reports
            .iter()
            .any(|r| r.function == "IngestFunction" && r.cold_start()),
        "{reports:?}"
    );
    stack.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_message_ends_in_the_dlq_and_the_others_are_stored() -> Result<()> {
    let stack = start("poison", None).await?;
    let batch = json!([
        {"eventId": "good-1", "type": "PAGE_VIEW"},
        {"eventId": "poison-1", "type": "PAGE_VIEW"},
        {"eventId": "good-2", "type": "PURCHASE", "revenue": {"amount": "5.00"}}
    ]);
    let (status, _) = post(&stack, "/v1/events/batch", batch).await?;
    assert_eq!(status, 202);
    let store = store(&stack)?;
    for id in ["good-1", "good-2"] {
        wait_for(&store, id, EventStatus::Processed).await?;
    }
    let dead = wait_for(&store, "poison-1", EventStatus::DeadLetter).await?;
    assert_eq!(
        dead.attempts, 2,
        "MaxReceiveCount 2 from the parameter override"
    );

    // SQS moves it to the DLQ on the receive after the last attempt; the poller keeps receiving.
    let dlq = stack.stack.queue("DeadLetterQueue")?.url.clone();
    let deadline = Instant::now() + Duration::from_secs(30);
    let body = loop {
        let received = stack
            .stack
            .sqs
            .receive_message()
            .queue_url(&dlq)
            .wait_time_seconds(1)
            .send()
            .await?;
        if let Some(message) = received.messages().first() {
            break message.body().unwrap_or_default().to_owned();
        }
        if Instant::now() > deadline {
            bail!("poison-1 never reached the DLQ");
        }
    };
    // The batch travelled as one message; it is dead-lettered whole, with the stored events in it.
    let envelope: Value = serde_json::from_str(&body)?;
    assert_eq!(envelope["events"][1]["eventId"], "poison-1", "{envelope}");
    for id in ["good-1", "good-2"] {
        let good = store.get(id).await?.context("stored")?;
        assert_eq!((good.status, good.attempts), (EventStatus::Processed, 1));
    }
    stack.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_function_that_exits_mid_invocation_is_restarted_and_its_batch_retried() -> Result<()> {
    let marker =
        PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("crash-{}", uuid::Uuid::new_v4()));
    let stack = start("crash", Some(&marker)).await?;
    let (status, _) = post(
        &stack,
        "/v1/events",
        json!({"eventId": "crash-1", "type": "EMAIL_OPEN"}),
    )
    .await?;
    assert_eq!(status, 202);
    let stored = wait_for(&store(&stack)?, "crash-1", EventStatus::Processed).await?;
    assert!(marker.exists(), "the first invocation crashed");
    assert_eq!(stored.attempts, 2, "stored by the retry after the crash");
    assert_eq!(stack.runtimes().restart_count("ProcessFunction"), Some(1));
    let reports = wait_reports(&stack, |r| {
        r.iter()
            .any(|r| r.function == "ProcessFunction" && r.outcome == InvocationOutcome::Success)
    })
    .await?;
    let process: Vec<_> = reports
        .iter()
        .filter(|r| r.function == "ProcessFunction")
        .collect();
    assert!(
        matches!(process[0].outcome, InvocationOutcome::Crashed(_)),
        "{process:?}"
    );
    assert_eq!(
        process.iter().filter(|r| r.cold_start()).count(),
        2,
        "{process:?}"
    );
    stack.stop().await;
    let _ = std::fs::remove_file(marker);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schedule_fires_on_demand_with_its_input() -> Result<()> {
    let stack = start("schedule", None).await?;
    let response = reqwest::Client::new()
        .post(format!(
            "http://{}/_local/schedules/Nightly",
            stack.api_addr
        ))
        .send()
        .await?;
    assert_eq!(response.status().as_u16(), 200);
    let body: Value = response.json().await?;
    assert_eq!(body["result"], json!({"batchItemFailures": []}), "{body}");
    let unknown = reqwest::Client::new()
        .post(format!("http://{}/_local/schedules/Nope", stack.api_addr))
        .send()
        .await?;
    assert_eq!(unknown.status().as_u16(), 404);
    stack.stop().await;
    Ok(())
}

/// pid → parent pid, from /proc.
fn parents() -> HashMap<u32, u32> {
    let mut map = HashMap::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // The command name is in parentheses and may contain spaces: parse after the last ')'.
        let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
            continue;
        };
        if let Some(ppid) = rest.split_whitespace().nth(1).and_then(|p| p.parse().ok()) {
            map.insert(pid, ppid);
        }
    }
    map
}

fn descendants(root: u32) -> HashSet<u32> {
    let parents = parents();
    let mut found = HashSet::new();
    let mut frontier = vec![root];
    while let Some(p) = frontier.pop() {
        for (child, parent) in &parents {
            if *parent == p && found.insert(*child) {
                frontier.push(*child);
            }
        }
    }
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctrl_c_stops_everything_and_frees_the_port() -> Result<()> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_tally-local"))
        .args([
            "up",
            "--api",
            &format!("127.0.0.1:{port}"),
            "--cargo-feature",
            FEATURES,
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()?;
    let pid = child.id().context("pid")?;
    let mut lines = BufReader::new(child.stdout.take().context("stdout")?).lines();
    let ready = tokio::time::timeout(Duration::from_secs(300), async {
        while let Some(line) = lines.next_line().await? {
            if line.contains("Ctrl-C stops everything") {
                return Ok::<bool, anyhow::Error>(true);
            }
        }
        Ok(false)
    })
    .await??;
    assert!(ready, "tally-local printed its banner");
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    // Start both functions so there are processes of every kind to stop.
    let (status, _) = {
        let r = reqwest::Client::new()
            .post(format!("http://127.0.0.1:{port}/v1/events"))
            .bearer_auth(LOCAL_INGEST_KEY)
            .json(&json!({"type": "PAGE_VIEW"}))
            .send()
            .await?;
        (r.status().as_u16(), ())
    };
    assert_eq!(status, 202);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let before = descendants(pid);
    assert!(
        before.len() >= 4,
        "emulators and functions are running: {before:?}"
    );

    let killed = tokio::process::Command::new("kill")
        .args(["-INT", &pid.to_string()])
        .status()
        .await?;
    assert!(killed.success());
    let exit = tokio::time::timeout(Duration::from_secs(40), child.wait()).await??;
    assert!(exit.success(), "clean exit: {exit}");
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let alive: Vec<u32> = before
            .iter()
            .copied()
            .filter(|p| std::path::Path::new(&format!("/proc/{p}")).exists())
            .collect();
        if alive.is_empty() {
            break;
        }
        if Instant::now() > deadline {
            bail!("processes left behind: {alive:?}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    std::net::TcpListener::bind(("127.0.0.1", port)).context("the API port is free again")?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_dir_keeps_tables_and_queued_messages_between_runs() -> Result<()> {
    let dir =
        PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("state-{}", uuid::Uuid::new_v4()));
    let options = || -> Result<UpOptions> {
        Ok(UpOptions {
            state_dir: Some(dir.clone()),
            parameters: vec![("MaxReceiveCount".into(), "2".into())],
            cargo_features: vec![FEATURES.into()],
            ..UpOptions::new(test_template("state", None)?)
        })
    };
    let first = LocalStack::start(options()?).await?;
    let (status, _) = post(
        &first,
        "/v1/events",
        json!({"eventId": "kept-1", "type": "DEMO_REQUEST"}),
    )
    .await?;
    assert_eq!(status, 202);
    wait_for(&store(&first)?, "kept-1", EventStatus::Processed).await?;
    let dlq = first.stack.queue("DeadLetterQueue")?.url.clone();
    first
        .stack
        .sqs
        .send_message()
        .queue_url(&dlq)
        .message_body("parked")
        .message_attributes(
            "correlationId",
            aws_sdk_sqs::types::MessageAttributeValue::builder()
                .data_type("String")
                .string_value("c-1")
                .build()?,
        )
        .send()
        .await?;
    first.stop().await;

    let second = LocalStack::start(options()?).await?;
    let kept = store(&second)?
        .get("kept-1")
        .await?
        .context("kept-1 survived the restart")?;
    assert_eq!(kept.status, EventStatus::Processed);
    let dlq = second.stack.queue("DeadLetterQueue")?.url.clone();
    let received = second
        .stack
        .sqs
        .receive_message()
        .queue_url(&dlq)
        .message_attribute_names("All")
        .wait_time_seconds(1)
        .send()
        .await?;
    let message = received
        .messages()
        .first()
        .context("the DLQ message survived the restart")?;
    assert_eq!(message.body(), Some("parked"));
    let attribute = message
        .message_attributes()
        .and_then(|a| a.get("correlationId"))
        .and_then(|v| v.string_value());
    assert_eq!(attribute, Some("c-1"));
    second.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stored_events_are_rolled_up_and_archived_through_the_stream_mappings() -> Result<()> {
    use chrono::DurationRound;
    let stack = LocalStack::start(UpOptions {
        parameters: vec![("RollupWindowSeconds".into(), "2".into())],
        cargo_features: vec![FEATURES.into()],
        ..UpOptions::new(test_template("rollup", None)?)
    })
    .await?;
    let now = chrono::Utc::now();
    let batch = json!([
        {"eventId": "r-1", "type": "PURCHASE", "campaignId": "c1", "revenue": {"amount": "10.50"}, "leadId": "lead-e2e"},
        {"eventId": "r-2", "type": "PURCHASE", "campaignId": "c1", "revenue": {"amount": "2.25"}},
        {"eventId": "r-3", "type": "PAGE_VIEW", "campaignId": "c2", "leadId": "lead-e2e"}
    ]);
    let (status, _) = post(&stack, "/v1/events/batch", batch).await?;
    assert_eq!(status, 202);
    // Read back through the gateway and the real `query` binary.
    let client = reqwest::Client::new();
    let health = client
        .get(format!("http://{}/health", stack.api_addr))
        .send()
        .await?;
    assert_eq!(health.status().as_u16(), 200);
    // Readiness reaches both tables and both queues from the real binary.
    let ready: Value = client
        .get(format!("http://{}/health/ready", stack.api_addr))
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(ready["status"], "ok", "{ready}");
    assert_eq!(
        ready["checks"].as_object().map(|c| c.len()),
        Some(4),
        "{ready}"
    );
    let metrics = client
        .get(format!("http://{}/metrics", stack.api_addr))
        .bearer_auth(LOCAL_READ_KEY)
        .send()
        .await?;
    assert_eq!(metrics.status().as_u16(), 200);
    let text = metrics.text().await?;
    assert!(
        text.lines()
            .any(|l| l == "tally_events_accepted_total{source=\"api\"} 3"),
        "{text}"
    );
    assert!(
        text.contains("tally_queue_depth{queue=\"dead_letter\"} 0"),
        "{text}"
    );
    let hour_start = now.duration_trunc(chrono::Duration::hours(1))?;
    let url = format!(
        "http://{}/v1/aggregations?window=hour&start={}&end={}&campaignId=c1&type=PURCHASE",
        stack.api_addr,
        hour_start.timestamp_millis(),
        (hour_start + chrono::Duration::hours(1)).timestamp_millis()
    );
    let day = now.format("%Y-%m-%d").to_string();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let found: Value = client
            .get(&url)
            .bearer_auth(LOCAL_READ_KEY)
            .send()
            .await?
            .json()
            .await?;
        if let Some(bucket) = found["buckets"].get(0) {
            assert_eq!(bucket["count"], 2, "{found}");
            assert_eq!(bucket["revenue"], json!({"USD": "12.75"}), "{found}");
            break;
        }
        if Instant::now() > deadline {
            bail!("no aggregates after 120 s: {found}");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // The real `archive` binary sent every stored event through moto's Firehose to S3.
    let bucket = stack.stack.bucket("ArchiveBucket")?.name.clone();
    let archived = loop {
        let mut ids = std::collections::BTreeSet::new();
        let listed = stack
            .stack
            .s3
            .list_objects_v2()
            .bucket(&bucket)
            .send()
            .await?;
        for object in listed.contents() {
            let body = stack
                .stack
                .s3
                .get_object()
                .bucket(&bucket)
                .key(object.key().unwrap_or_default())
                .send()
                .await?
                .body
                .collect()
                .await?
                .into_bytes();
            for line in String::from_utf8_lossy(&body).lines() {
                let event: Value = serde_json::from_str(line)?;
                ids.insert(event["eventId"].as_str().unwrap_or_default().to_owned());
            }
        }
        if ids.len() >= 3 || Instant::now() > deadline {
            break ids;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert_eq!(
        archived.iter().map(String::as_str).collect::<Vec<_>>(),
        vec!["r-1", "r-2", "r-3"]
    );
    let config = tally_local::sdk_config(&stack.stack.dynamodb_endpoint);
    // The hourly reconciliation schedule, fired now: today's events are too fresh to be settled.
    let fired: Value = reqwest::Client::new()
        .post(format!(
            "http://{}/_local/schedules/Reconcile",
            stack.api_addr
        ))
        .send()
        .await?
        .json()
        .await?;
    let days = &fired["result"]["days"];
    assert_eq!(fired["result"]["task"], "reconcile", "{fired}");
    assert_eq!(days[0]["day"], json!(day), "{fired}");
    assert_eq!(days[0]["settled"], json!(false), "{fired}");
    assert_eq!(days[0]["unchanged"], json!(false), "{fired}");
    // Scored by the stream's batches as they arrive, no schedule needed.
    let leads =
        tally::aws::DynamoLeads::new(&config, stack.stack.table("AnalyticsTable")?.to_owned());
    loop {
        let stored = tally::scoring::LeadStore::get_leads(&leads, &["lead-e2e"]).await?;
        if let Some(record) = stored.get("lead-e2e") {
            if record.state.events == 2 {
                assert_eq!(record.state.score, 105);
                break;
            }
        }
        if Instant::now() > deadline {
            bail!("lead-e2e never scored: {stored:?}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let reports =
        wait_reports(&stack, |r| r.iter().any(|r| r.function == "RollupFunction")).await?;
    assert!(reports
        .iter()
        .any(|r| r.function == "RollupFunction" && r.outcome == InvocationOutcome::Success));
    stack.stop().await;
    Ok(())
}

/// What an HTTP endpoint of the user's (a CRM, a chat webhook) received.
type Received = std::sync::Arc<std::sync::Mutex<Vec<(Option<String>, Value)>>>;

/// An HTTPS endpoint stand-in on loopback: keeps each POST's `Authorization` and JSON body.
async fn receiver() -> Result<(SocketAddr, Received)> {
    use axum::extract::State;
    use axum::http::HeaderMap;
    let received: Received = Received::default();
    let app = axum::Router::new()
        .route(
            "/hook",
            axum::routing::post(
                |State(seen): State<Received>, headers: HeaderMap, body: String| async move {
                    let auth = headers
                        .get("authorization")
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_owned);
                    let body = serde_json::from_str(&body).unwrap_or(Value::Null);
                    seen.lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .push((auth, body));
                    "ok"
                },
            ),
        )
        .with_state(received.clone());
    let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0))).await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok((addr, received))
}

async fn wait_received(received: &Received, count: usize) -> Result<Vec<(Option<String>, Value)>> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let seen = received.lock().unwrap_or_else(|p| p.into_inner()).clone();
        if seen.len() >= count {
            return Ok(seen);
        }
        if Instant::now() > deadline {
            bail!("the endpoint received {seen:?}, not {count} events");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stage_changes_reach_the_webhook_through_the_bus_rule_as_the_template_declares(
) -> Result<()> {
    let (addr, received) = receiver().await?;
    let stack = start_with(
        "stages",
        None,
        vec![
            ("StageWebhookUrl".into(), format!("http://{addr}/hook")),
            (
                "StageWebhookHeaderValue".into(),
                "Bearer stage-secret".into(),
            ),
        ],
    )
    .await?;
    let lead = "email:stages@example.com";
    let purchase = |id: &str, minutes: i64| {
        json!({"eventId": id, "type": "PURCHASE", "leadId": lead,
               "timestamp": (chrono::Utc::now() - chrono::Duration::minutes(minutes)).to_rfc3339()})
    };
    let (status, _) = post(&stack, "/v1/events", purchase("st-1", 3)).await?;
    assert_eq!(status, 202);
    let seen = wait_received(&received, 1).await?;
    let (auth, first) = &seen[0];
    assert_eq!(
        auth.as_deref(),
        Some("Bearer stage-secret"),
        "the connection's key"
    );
    assert_eq!(
        (
            first["leadId"].clone(),
            first["from"].clone(),
            first["to"].clone(),
            first["score"].clone(),
            first["eventId"].clone()
        ),
        (
            json!(lead),
            Value::Null,
            json!("MQL"),
            json!(100),
            json!("st-1")
        ),
        "the detail alone ($.detail): {first}"
    );
    assert!(
        first["at"].as_str().is_some_and(|t| t.ends_with('Z')),
        "{first}"
    );

    for (id, minutes) in [("st-2", 2), ("st-3", 1)] {
        let (status, _) = post(&stack, "/v1/events", purchase(id, minutes)).await?;
        assert_eq!(status, 202);
    }
    let seen = wait_received(&received, 2).await?;
    assert_eq!(
        (seen[1].1["from"].clone(), seen[1].1["to"].clone()),
        (json!("MQL"), json!("SQL"))
    );
    // A duplicate submission, a recompute of the lead and the hourly stage check change no
    // stage: nothing more is sent.
    let (status, _) = post(&stack, "/v1/events", purchase("st-1", 3)).await?;
    assert_eq!(status, 202);
    let recomputed = reqwest::Client::new()
        .post(format!(
            "http://{}/v1/admin/leads/recompute",
            stack.api_addr
        ))
        .bearer_auth(tally_local::up::LOCAL_ADMIN_KEY)
        .json(&json!({"leadId": lead}))
        .send()
        .await?;
    assert_eq!(recomputed.status().as_u16(), 202);
    let fired: Value = reqwest::Client::new()
        .post(format!(
            "http://{}/_local/schedules/CheckStages",
            stack.api_addr
        ))
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(fired["result"]["task"], "stages", "{fired}");
    assert_eq!(fired["result"]["stageChanges"], 0, "{fired}");
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(received.lock().unwrap_or_else(|p| p.into_inner()).len(), 2);
    let board: Value = reqwest::Client::new()
        .get(format!("http://{}/v1/leads?stage=SQL", stack.api_addr))
        .bearer_auth(LOCAL_READ_KEY)
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(board["leads"][0]["leadId"], lead, "{board}");
    assert_eq!(board["leads"][0]["score"], 300, "{board}");
    stack.stop().await;
    Ok(())
}
