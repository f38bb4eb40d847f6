//! moto keeps nothing between runs. With `--state-dir`, the local stack saves the messages left in
//! its queues when it stops and sends them again when it starts, so a DLQ survives a restart.
//! Messages in flight at shutdown (received and not yet visible again) are not seen by the save.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use anyhow::{Context, Result};
use aws_sdk_sqs::types::{
    MessageAttributeValue, MessageSystemAttributeName, SendMessageBatchRequestEntry,
};
use serde::{Deserialize, Serialize};

use crate::QueueInfo;

#[derive(Debug, Serialize, Deserialize, PartialEq)]
struct SavedMessage {
    body: String,
    /// String message attributes (name → value); Tally sends no binary ones.
    attributes: BTreeMap<String, String>,
}

fn file(dir: &Path, logical_id: &str) -> std::path::PathBuf {
    dir.join(format!("{logical_id}.jsonl"))
}

/// Drains every queue's visible messages into `<dir>/<LogicalId>.jsonl`. Returns how many.
pub async fn save(
    sqs: &aws_sdk_sqs::Client,
    queues: &HashMap<String, QueueInfo>,
    dir: &Path,
) -> Result<usize> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut total = 0;
    for (id, queue) in queues {
        let mut lines = String::new();
        loop {
            let received = sqs
                .receive_message()
                .queue_url(&queue.url)
                .max_number_of_messages(10)
                .visibility_timeout(600)
                .wait_time_seconds(0)
                .message_system_attribute_names(MessageSystemAttributeName::All)
                .message_attribute_names("All")
                .send()
                .await
                .with_context(|| format!("receiving from {id}"))?;
            let messages = received.messages();
            if messages.is_empty() {
                break;
            }
            for m in messages {
                let attributes = m
                    .message_attributes()
                    .map(|a| {
                        a.iter()
                            .filter_map(|(k, v)| Some((k.clone(), v.string_value()?.to_owned())))
                            .collect()
                    })
                    .unwrap_or_default();
                let saved = SavedMessage {
                    body: m.body().unwrap_or_default().to_owned(),
                    attributes,
                };
                lines.push_str(&serde_json::to_string(&saved)?);
                lines.push('\n');
                total += 1;
            }
        }
        std::fs::write(file(dir, id), lines).with_context(|| format!("saving {id}"))?;
    }
    Ok(total)
}

/// Sends the saved messages again (and removes the files). Returns how many.
pub async fn restore(
    sqs: &aws_sdk_sqs::Client,
    queues: &HashMap<String, QueueInfo>,
    dir: &Path,
) -> Result<usize> {
    let mut total = 0;
    for (id, queue) in queues {
        let path = file(dir, id);
        let Ok(text) = std::fs::read_to_string(&path) else {
            continue;
        };
        let mut saved = Vec::new();
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            let message: SavedMessage = serde_json::from_str(line)
                .with_context(|| format!("reading {}", path.display()))?;
            saved.push(message);
        }
        // SendMessageBatch, 10 at a time; any entry SQS reports as failed fails the restore
        // (the file stays, so nothing is lost).
        for group in saved.chunks(10) {
            let mut entries = Vec::with_capacity(group.len());
            for (i, message) in group.iter().enumerate() {
                let mut entry = SendMessageBatchRequestEntry::builder()
                    .id(i.to_string())
                    .message_body(&message.body);
                for (name, value) in &message.attributes {
                    let value = MessageAttributeValue::builder()
                        .data_type("String")
                        .string_value(value)
                        .build()?;
                    entry = entry.message_attributes(name, value);
                }
                entries.push(entry.build()?);
            }
            let output = sqs
                .send_message_batch()
                .queue_url(&queue.url)
                .set_entries(Some(entries))
                .send()
                .await
                .with_context(|| format!("restoring messages to {id}"))?;
            if let Some(failed) = output.failed().first() {
                anyhow::bail!("restoring a message to {id} failed: {}", failed.code());
            }
            total += group.len();
        }
        std::fs::remove_file(&path).with_context(|| format!("removing {}", path.display()))?;
    }
    Ok(total)
}
