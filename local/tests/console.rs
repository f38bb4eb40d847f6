//! End-to-end: the web console in headless Chromium (Debian's `chromium`, driven by
//! `playwright-core`) against the whole local stack.
//!
//! This test sets up what the browser steps need and cannot make through the page: two
//! dead-lettered events (the process function is built with the `faults` feature, and every
//! store fails while an outage file exists). Then `console/e2e/console.e2e.mjs` drives the
//! console: sign in, the live leaderboard, a rule edit and its conflict, a CSV upload with a bad
//! row, a replay and a redrive. Its screenshots go to `console/e2e/artifacts/` (git-ignored).

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use serde_json::{json, Value};
use serde_yaml::Value as Yaml;
use tally::aws::DynamoEventStore;
use tally::store::{EventStatus, EventStore};
use tally_local::up::{LocalStack, UpOptions, LOCAL_ADMIN_KEY, LOCAL_INGEST_KEY, LOCAL_READ_KEY};

const DEAD_EVENTS: [&str; 2] = ["console-dead-1", "console-dead-2"];

/// The project's template with quick retries and the outage switch on the process function.
fn template(outage_file: &Path) -> Result<PathBuf> {
    common::quick_retry_template("console", |process| {
        process["Environment"]["Variables"]["TALLY_FAULT_OUTAGE_FILE"] =
            Yaml::from(outage_file.display().to_string());
        Ok(())
    })
}

async fn dead_letter_two_events(stack: &LocalStack, outage_file: &Path) -> Result<()> {
    std::fs::write(outage_file, "down")?;
    let batch: Vec<Value> = DEAD_EVENTS
        .iter()
        .map(|id| json!({"eventId": id, "type": "FORM_SUBMISSION", "lead": {"email": format!("{id}@example.com")}}))
        .collect();
    let response = reqwest::Client::new()
        .post(format!("http://{}/v1/events/batch", stack.api_addr))
        .bearer_auth(LOCAL_INGEST_KEY)
        .json(&batch)
        .send()
        .await?;
    assert_eq!(response.status().as_u16(), 202);
    let store = DynamoEventStore::new(
        &tally_local::sdk_config(&stack.stack.dynamodb_endpoint),
        stack.stack.table("EventsTable")?.to_owned(),
    );
    let deadline = Instant::now() + Duration::from_secs(90);
    for id in DEAD_EVENTS {
        loop {
            let stored = store.get(id).await?;
            if stored.as_ref().map(|s| s.status) == Some(EventStatus::DeadLetter) {
                break;
            }
            if Instant::now() > deadline {
                bail!("{id} was not dead-lettered: {stored:?}");
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
    // SQS moves a message to the DLQ on the receive after its last attempt. The two events were
    // posted together, so they travel (and are dead-lettered) in one message.
    let dlq = stack.stack.queue("DeadLetterQueue")?.url.clone();
    loop {
        let attributes = stack
            .stack
            .sqs
            .get_queue_attributes()
            .queue_url(&dlq)
            .attribute_names(aws_sdk_sqs::types::QueueAttributeName::ApproximateNumberOfMessages)
            .send()
            .await?;
        let depth = attributes
            .attributes()
            .and_then(|a| {
                a.get(&aws_sdk_sqs::types::QueueAttributeName::ApproximateNumberOfMessages)
            })
            .and_then(|n| n.parse::<usize>().ok())
            .unwrap_or(0);
        if depth == 1 {
            break;
        }
        if Instant::now() > deadline {
            bail!("the DLQ holds {depth} messages, not 1");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    std::fs::remove_file(outage_file)?;
    Ok(())
}

/// `console/node_modules` is installed by the console function's build; `npm ci` again only if
/// it is missing.
fn console_dir() -> Result<PathBuf> {
    let dir = tally_local::repo_root().join("console");
    if !dir.join("node_modules/playwright-core").exists() {
        let status = std::process::Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund"])
            .current_dir(&dir)
            .status()?;
        if !status.success() {
            bail!("npm ci in console/ failed");
        }
    }
    Ok(dir)
}

fn chromium() -> Result<String> {
    let path = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    if !Path::new(&path).exists() {
        bail!(
            "no Chromium at {path}: install Debian's `chromium` package (`.ci/run` does), or set \
             CHROMIUM to its path"
        );
    }
    Ok(path)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_works_end_to_end_in_a_real_browser() -> Result<()> {
    let chromium = chromium()?;
    let console = console_dir()?;
    let outage_file = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("console-outage");
    let _ = std::fs::remove_file(&outage_file);
    let stack = LocalStack::start(UpOptions {
        parameters: vec![("MaxReceiveCount".into(), "2".into())],
        cargo_features: vec!["process/faults".into()],
        ..UpOptions::new(template(&outage_file)?)
    })
    .await?;
    let outcome = async {
        dead_letter_two_events(&stack, &outage_file).await?;
        let output = tokio::process::Command::new("node")
            .arg("e2e/console.e2e.mjs")
            .current_dir(&console)
            .env("TALLY_URL", format!("http://{}", stack.api_addr))
            .env("TALLY_READ_KEY", LOCAL_READ_KEY)
            .env("TALLY_ADMIN_KEY", LOCAL_ADMIN_KEY)
            .env("TALLY_INGEST_KEY", LOCAL_INGEST_KEY)
            .env("TALLY_DEAD_EVENTS", DEAD_EVENTS.join(","))
            .env("TALLY_ARTIFACTS", console.join("e2e/artifacts"))
            .env("CHROMIUM", &chromium)
            .kill_on_drop(true)
            .output()
            .await?;
        print!("{}", String::from_utf8_lossy(&output.stdout));
        eprint!("{}", String::from_utf8_lossy(&output.stderr));
        if !output.status.success() {
            bail!(
                "the browser steps failed ({}); screenshots in console/e2e/artifacts/",
                output.status
            );
        }
        Ok(())
    }
    .await;
    stack.stop().await;
    outcome
}
