//! What one stream batch of the analytics table tells open consoles: the leads written (their
//! board fields, as the write left them) and the stage changes among those writes.

use chrono::DateTime;
use serde::Serialize;
use serde_json::{json, Value};

use crate::event::format_utc;
use crate::scoring::{stage_change_of, StageChange, StageStreamEvent};

/// The stream event: the same records the `stages` function reads.
pub type LiveStreamEvent = StageStreamEvent;

/// Leads (and stage changes) one message lists at most; past it the message says `truncated`
/// and consoles read the board again instead. 200 leads are about 40 KB, well inside API
/// Gateway's 128 KB message limit.
pub const MAX_LEADS_PER_MESSAGE: usize = 200;

/// A lead as its latest write in the batch left it. `score` is as written, before decay, which
/// a console's next read applies.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LiveLead {
    pub lead_id: String,
    pub score: i64,
    pub stage: Option<String>,
    pub last_activity_at: Option<String>,
    pub event_count: u64,
    pub company: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LiveBatch {
    /// One entry per lead, in the order of its last write in the batch.
    pub leads: Vec<LiveLead>,
    pub stage_changes: Vec<StageChange>,
    pub records: usize,
}

fn string<'a>(image: &'a Value, name: &str) -> Option<&'a str> {
    image.get(name)?.get("S")?.as_str()
}

fn number(image: &Value, name: &str) -> Option<i64> {
    image.get(name)?.get("N")?.as_str()?.parse().ok()
}

impl LiveBatch {
    pub fn of(event: &LiveStreamEvent) -> Self {
        let mut batch = LiveBatch {
            records: event.records.len(),
            ..LiveBatch::default()
        };
        for record in &event.records {
            let Some(image) = record.dynamodb.new_image.as_ref() else {
                continue;
            };
            let Some(lead_id) = string(image, "pk").and_then(|pk| pk.strip_prefix("LEAD#")) else {
                continue;
            };
            // A lead without events has left the board; nothing to show.
            let (Some("STATE"), Some(score)) = (string(image, "sk"), number(image, "score")) else {
                continue;
            };
            let lead = LiveLead {
                lead_id: lead_id.to_owned(),
                score,
                stage: string(image, "stage").map(str::to_owned),
                last_activity_at: number(image, "lastActivity")
                    .and_then(DateTime::from_timestamp_millis)
                    .map(format_utc),
                event_count: number(image, "events")
                    .and_then(|n| u64::try_from(n).ok())
                    .unwrap_or(0),
                company: string(image, "company").map(str::to_owned),
            };
            batch.leads.retain(|l| l.lead_id != lead.lead_id);
            batch.leads.push(lead);
            if let Some(Ok(change)) = stage_change_of(record) {
                batch.stage_changes.push(change);
            }
        }
        batch
    }
}

/// The one message every console gets for a batch.
pub fn live_message(batch: &LiveBatch) -> Vec<u8> {
    let truncated = batch.leads.len() > MAX_LEADS_PER_MESSAGE
        || batch.stage_changes.len() > MAX_LEADS_PER_MESSAGE;
    let leads = &batch.leads[batch.leads.len().saturating_sub(MAX_LEADS_PER_MESSAGE)..];
    let changes = &batch.stage_changes[..batch.stage_changes.len().min(MAX_LEADS_PER_MESSAGE)];
    json!({
        "type": "leads",
        "leads": leads,
        "stageChanges": changes,
        "truncated": truncated,
    })
    .to_string()
    .into_bytes()
}
