//! The repair's rules over in-memory ports (the emulator test is `tests/tests/repair.rs`).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;

use serde_json::json;

use super::*;

#[derive(Default)]
struct Queue {
    messages: Mutex<BTreeMap<String, String>>,
    /// Received and not deleted: back in `messages` when released.
    hidden: Mutex<BTreeMap<String, String>>,
    deleted: Mutex<Vec<String>>,
}

impl Queue {
    fn with(bodies: &[String]) -> Arc<Self> {
        let q = Self::default();
        if let Ok(mut m) = q.messages.lock() {
            for (i, b) in bodies.iter().enumerate() {
                m.insert(format!("r{i}"), b.clone());
            }
        }
        Arc::new(q)
    }
    fn deleted(&self) -> Vec<String> {
        self.deleted.lock().map(|d| d.clone()).unwrap_or_default()
    }
}

#[async_trait]
impl FailureQueue for Queue {
    async fn receive(&self, max: usize) -> Result<Vec<FailureMessage>, StoreError> {
        // Each message once per run, as the visibility timeout gives it.
        let mut messages = self
            .messages
            .lock()
            .map_err(|_| StoreError::Unavailable("lock".into()))?;
        let taken: Vec<String> = messages.keys().take(max).cloned().collect();
        let received: Vec<FailureMessage> = taken
            .into_iter()
            .filter_map(|r| {
                messages
                    .remove(&r)
                    .map(|body| FailureMessage { receipt: r, body })
            })
            .collect();
        if let Ok(mut hidden) = self.hidden.lock() {
            hidden.extend(received.iter().map(|m| (m.receipt.clone(), m.body.clone())));
        }
        Ok(received)
    }
    async fn release(&self, receipt: &str) -> Result<(), StoreError> {
        let body = self.hidden.lock().ok().and_then(|mut h| h.remove(receipt));
        if let (Some(body), Ok(mut messages)) = (body, self.messages.lock()) {
            messages.insert(receipt.to_owned(), body);
        }
        Ok(())
    }
    async fn delete(&self, receipt: &str) -> Result<(), StoreError> {
        if let Ok(mut d) = self.deleted.lock() {
            d.push(receipt.to_owned());
        }
        Ok(())
    }
}

struct Events(Vec<(DateTime<Utc>, RepairEvent)>);

#[async_trait]
impl ProcessedEvents for Events {
    async fn processed_between(
        &self,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        oldest: DateTime<Utc>,
    ) -> Result<Vec<RepairEvent>, StoreError> {
        Ok(self
            .0
            .iter()
            .filter(|(at, e)| *at >= from && *at <= to && e.timestamp >= oldest)
            .map(|(_, e)| e.clone())
            .collect())
    }
}

#[derive(Default)]
struct Days {
    unsettled: BTreeSet<String>,
    reconciled: Mutex<Vec<String>>,
}

#[async_trait]
impl DayReconcile for Days {
    async fn reconcile(&self, day: &str, _: DateTime<Utc>) -> Result<bool, StoreError> {
        if self.unsettled.contains(day) {
            return Ok(false);
        }
        if let Ok(mut r) = self.reconciled.lock() {
            r.push(day.to_owned());
        }
        Ok(true)
    }
}

#[derive(Default)]
struct Leads(Mutex<Vec<String>>);

#[async_trait]
impl LeadRecompute for Leads {
    async fn recompute_now(&self, lead_id: &str, _: DateTime<Utc>) -> Result<bool, StoreError> {
        if let Ok(mut l) = self.0.lock() {
            l.push(lead_id.to_owned());
        }
        Ok(true)
    }
    async fn request_all(&self, _: String, _: DateTime<Utc>) -> Result<u64, StoreError> {
        Ok(0)
    }
}

/// Refuses lines containing `refuse`.
struct Sink {
    refuse: Option<&'static str>,
    lines: Mutex<Vec<String>>,
}

#[async_trait]
impl ArchiveSink for Sink {
    async fn put_batch(&self, records: Vec<Vec<u8>>) -> Result<Vec<Option<String>>, StoreError> {
        let mut out = Vec::new();
        for r in records {
            let text = String::from_utf8_lossy(&r).into_owned();
            if self.refuse.is_some_and(|x| text.contains(x)) {
                out.push(Some("ServiceUnavailableException".into()));
            } else {
                if let Ok(mut l) = self.lines.lock() {
                    l.push(text);
                }
                out.push(None);
            }
        }
        Ok(out)
    }
}

fn at(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .unwrap_or_default()
}

fn record(first: &str, last: &str) -> String {
    json!({
        "requestContext": {"condition": "RetryAttemptsExhausted"},
        "version": "1.0",
        "DDBStreamBatchInfo": {
            "shardId": "s", "startSequenceNumber": "1", "endSequenceNumber": "9",
            "approximateArrivalOfFirstRecord": first, "approximateArrivalOfLastRecord": last,
            "batchSize": 3, "streamArn": "arn"
        }
    })
    .to_string()
}

fn event(id: &str, timestamp: &str, lead: Option<&str>) -> RepairEvent {
    RepairEvent {
        event_id: id.into(),
        timestamp: at(timestamp),
        lead_id: lead.map(str::to_owned),
        event_json: format!(r#"{{"eventId":"{id}"}}"#),
    }
}

struct World {
    rollup: Arc<Queue>,
    archive: Arc<Queue>,
    days: Arc<Days>,
    leads: Arc<Leads>,
    sink: Arc<Sink>,
    repairer: Repairer,
}

fn world(
    rollup: &[String],
    archive: &[String],
    unsettled: &[&str],
    refuse: Option<&'static str>,
) -> World {
    // Processed at 10:00:30 and 10:05:00 on Dec 5; one stamped two days before (late), one
    // processed at noon (outside every window below).
    let events = Events(vec![
        (
            at("2026-12-05T10:00:30Z"),
            event("e1", "2026-12-05T09:59:00Z", Some("lead-a")),
        ),
        (
            at("2026-12-05T10:00:31Z"),
            event("e2", "2026-12-03T08:00:00Z", Some("lead-b")),
        ),
        (
            at("2026-12-05T10:00:32Z"),
            event("e3", "2026-12-05T10:00:00Z", None),
        ),
        (
            at("2026-12-05T12:00:00Z"),
            event("e4", "2026-12-05T12:00:00Z", Some("lead-c")),
        ),
    ]);
    let (rollup, archive) = (Queue::with(rollup), Queue::with(archive));
    let days = Arc::new(Days {
        unsettled: unsettled.iter().map(|d| (*d).to_owned()).collect(),
        ..Default::default()
    });
    let leads = Arc::new(Leads::default());
    let sink = Arc::new(Sink {
        refuse,
        lines: Mutex::default(),
    });
    let repairer = Repairer::new(
        RepairPorts {
            rollup_failures: rollup.clone(),
            archive_failures: archive.clone(),
            events: Arc::new(events),
            days: days.clone(),
            leads: leads.clone(),
            archive: sink.clone(),
        },
        30,
    );
    World {
        rollup,
        archive,
        days,
        leads,
        sink,
        repairer,
    }
}

const NOW: &str = "2026-12-06T12:00:00Z";

#[tokio::test]
async fn a_rollup_failure_reconciles_its_days_refolds_its_leads_and_is_deleted(
) -> Result<(), RepairError> {
    let w = world(
        &[record("2026-12-05T10:00:30Z", "2026-12-05T10:00:32Z")],
        &[],
        &[],
        None,
    );
    let report = w
        .repairer
        .invoke(json!({"queue": "rollup"}), at(NOW))
        .await?;
    let rollup = report.rollup.unwrap_or_default();
    assert_eq!((rollup.records, rollup.repaired, rollup.events), (1, 1, 3));
    assert_eq!(
        w.days
            .reconciled
            .lock()
            .map(|d| d.clone())
            .unwrap_or_default(),
        vec!["2026-12-03", "2026-12-05"],
        "every day its events fall on, the late one's included"
    );
    assert_eq!(
        w.leads.0.lock().map(|l| l.clone()).unwrap_or_default(),
        vec!["lead-a", "lead-b"]
    );
    assert_eq!(w.rollup.deleted(), vec!["r0"]);
    assert!(report.archive.is_none());
    Ok(())
}

#[tokio::test]
async fn a_day_not_settled_or_a_refused_line_leaves_the_reference() -> Result<(), RepairError> {
    let w = world(
        &[record("2026-12-05T10:00:30Z", "2026-12-05T10:00:30Z")],
        &[record("2026-12-05T10:00:30Z", "2026-12-05T10:00:32Z")],
        &["2026-12-05"],
        Some("e2"),
    );
    let report = w.repairer.invoke(Value::Null, at(NOW)).await?;
    let rollup = report.rollup.unwrap_or_default();
    assert_eq!(
        (
            rollup.left,
            rollup.days_not_settled,
            rollup.leads_recomputed
        ),
        (1, 1, 2)
    );
    assert!(w.rollup.deleted().is_empty());
    let archive = report.archive.unwrap_or_default();
    assert_eq!((archive.left, archive.lines_archived), (1, 2));
    assert!(w.archive.deleted().is_empty());
    Ok(())
}

#[tokio::test]
async fn an_archive_failure_sends_every_event_of_its_time_again() -> Result<(), RepairError> {
    let w = world(
        &[],
        &[record("2026-12-05T10:00:31Z", "2026-12-05T10:00:31Z")],
        &[],
        None,
    );
    let report = w
        .repairer
        .invoke(json!({"queue": "archive"}), at(NOW))
        .await?;
    assert_eq!(
        report.archive.map(|a| (a.repaired, a.lines_archived)),
        Some((1, 3))
    );
    let lines = w.sink.lines.lock().map(|l| l.clone()).unwrap_or_default();
    assert_eq!(lines.len(), 3);
    assert!(lines.iter().all(|l| l.ends_with("}\n")), "{lines:?}");
    assert!(
        !lines.iter().any(|l| l.contains("e4")),
        "outside the window"
    );
    assert_eq!(w.archive.deleted(), vec!["r0"]);
    Ok(())
}

#[tokio::test]
async fn a_dry_run_counts_and_unreadable_references_stay() -> Result<(), RepairError> {
    let w = world(
        &[
            record("2026-12-05T10:00:30Z", "2026-12-05T10:00:32Z"),
            "not a record".into(),
        ],
        &[],
        &[],
        None,
    );
    let report = w
        .repairer
        .invoke(json!({"dryRun": true, "queue": "rollup"}), at(NOW))
        .await?;
    let rollup = report.rollup.unwrap_or_default();
    assert_eq!(
        (
            rollup.records,
            rollup.events,
            rollup.left,
            rollup.unreadable
        ),
        (2, 3, 1, 1)
    );
    assert!(w.rollup.deleted().is_empty());
    assert!(w
        .days
        .reconciled
        .lock()
        .map(|d| d.is_empty())
        .unwrap_or(false));
    assert!(report.dry_run);
    // The dry run handed its references back: the real run that follows repairs at once.
    let report = w
        .repairer
        .invoke(json!({"queue": "rollup"}), at(NOW))
        .await?;
    assert_eq!(report.rollup.map(|r| r.repaired), Some(1));
    assert_eq!(w.rollup.deleted(), vec!["r0"]);
    Ok(())
}

#[tokio::test]
async fn bad_input_names_the_problem() {
    let w = world(&[], &[], &[], None);
    for bad in [
        json!({"maxRecords": 0}),
        json!({"maxRecords": 101}),
        json!({"queue": "process"}),
        json!({"max_records": 5}),
    ] {
        assert!(
            matches!(
                w.repairer.invoke(bad.clone(), at(NOW)).await,
                Err(RepairError::Input(_))
            ),
            "{bad}"
        );
    }
}

#[test]
fn the_window_is_the_batch_arrival_widened_by_a_minute() {
    assert_eq!(
        batch_window(&record("2026-12-05T10:00:30Z", "2026-12-05T10:02:00Z")),
        Some((at("2026-12-05T09:59:30Z"), at("2026-12-05T10:03:00Z")))
    );
    assert_eq!(
        batch_window(&record("2026-12-05T10:02:00Z", "2026-12-05T10:00:00Z")),
        None
    );
    assert_eq!(batch_window("{}"), None);
    assert_eq!(batch_window("garbage"), None);
}

#[tokio::test]
async fn the_samples_are_valid_invocations() -> Result<(), Box<dyn std::error::Error>> {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../events/");
    for (sample, dry_run) in [("repair.json", false), ("repair-dry-run.json", true)] {
        let input: Value =
            serde_json::from_str(&std::fs::read_to_string(format!("{root}{sample}"))?)?;
        let w = world(&[], &[], &[], None);
        let report = w.repairer.invoke(input, at(NOW)).await?;
        assert_eq!(report.dry_run, dry_run, "{sample}");
    }
    Ok(())
}
