//! The redriver against in-memory queues that behave like SQS: received messages are hidden
//! until deleted, and the work queue may refuse chosen messages.

use std::collections::{HashSet, VecDeque};
use std::sync::Mutex;

use super::*;

#[derive(Default)]
struct MemoryQueues {
    dead: Mutex<VecDeque<DeadLetter>>,
    /// Received and not deleted (hidden until their visibility ends, which no test reaches).
    hidden: Mutex<Vec<DeadLetter>>,
    work: Mutex<Vec<DeadLetter>>,
    refused: HashSet<String>,
    receives: Mutex<Vec<u32>>,
}

fn lock<T>(m: &Mutex<T>) -> Result<std::sync::MutexGuard<'_, T>, QueueError> {
    m.lock().map_err(|_| QueueError::Unavailable("lock".into()))
}

#[async_trait]
impl RedriveQueues for &MemoryQueues {
    async fn receive(&self, max: u32, _: Duration) -> Result<Vec<DeadLetter>, QueueError> {
        lock(&self.receives)?.push(max);
        let mut dead = lock(&self.dead)?;
        let n = (max as usize).min(dead.len());
        let batch: Vec<DeadLetter> = dead.drain(..n).collect();
        lock(&self.hidden)?.extend(batch.iter().cloned());
        Ok(batch)
    }

    async fn send_to_work(&self, messages: &[DeadLetter]) -> Result<Vec<bool>, QueueError> {
        let mut work = lock(&self.work)?;
        Ok(messages
            .iter()
            .map(|m| {
                let ok = !self.refused.contains(&m.message_id);
                if ok {
                    work.push(m.clone());
                }
                ok
            })
            .collect())
    }

    async fn delete(&self, messages: &[DeadLetter]) -> Result<Vec<bool>, QueueError> {
        let mut hidden = lock(&self.hidden)?;
        Ok(messages
            .iter()
            .map(|m| {
                let before = hidden.len();
                hidden.retain(|h| h.receipt_handle != m.receipt_handle);
                hidden.len() < before
            })
            .collect())
    }

    async fn dead_letter_depth(&self) -> Result<u64, QueueError> {
        Ok(lock(&self.dead)?.len() as u64)
    }
}

fn dead_letters(n: usize) -> MemoryQueues {
    let queues = MemoryQueues::default();
    if let Ok(mut dead) = queues.dead.lock() {
        dead.extend((0..n).map(|i| DeadLetter {
            message_id: format!("m{i}"),
            receipt_handle: format!("r{i}"),
            body: format!("{{\"submissionId\":\"s{i}\"}}"),
            attributes: BTreeMap::from([(
                "correlationId".to_owned(),
                MessageAttribute {
                    data_type: "String".into(),
                    string_value: Some(format!("c{i}")),
                    binary_value: None,
                },
            )]),
        }));
    }
    queues
}

fn request(max_messages: u32, dry_run: bool) -> RedriveRequest {
    RedriveRequest {
        max_messages,
        dry_run,
        rate_per_second: 3000,
    }
}

#[tokio::test]
async fn every_message_moves_unchanged_and_leaves_the_dead_letter_queue() -> Result<(), QueueError>
{
    let queues = dead_letters(23);
    let expected: Vec<DeadLetter> = lock(&queues.dead)?.iter().cloned().collect();
    let report = Redriver::new(&queues)
        .redrive(&request(1000, false))
        .await?;
    assert_eq!(
        report,
        RedriveReport {
            moved: 23,
            remaining: 0,
            failed: 0,
            dry_run: false
        }
    );
    assert_eq!(
        *lock(&queues.work)?,
        expected,
        "bodies and attributes as received"
    );
    assert!(lock(&queues.hidden)?.is_empty(), "all deleted");
    assert_eq!(*lock(&queues.receives)?, vec![10, 10, 10, 10]);
    Ok(())
}

#[tokio::test]
async fn max_messages_caps_a_redrive() -> Result<(), QueueError> {
    let queues = dead_letters(25);
    let report = Redriver::new(&queues).redrive(&request(12, false)).await?;
    assert_eq!((report.moved, report.remaining), (12, 13));
    assert_eq!(*lock(&queues.receives)?, vec![10, 2]);
    Ok(())
}

#[tokio::test]
async fn a_dry_run_only_counts() -> Result<(), QueueError> {
    let queues = dead_letters(7);
    let report = Redriver::new(&queues).redrive(&request(1000, true)).await?;
    assert_eq!(
        (report.moved, report.remaining, report.dry_run),
        (0, 7, true)
    );
    assert!(lock(&queues.work)?.is_empty() && lock(&queues.receives)?.is_empty());
    Ok(())
}

#[tokio::test]
async fn a_message_the_work_queue_refuses_stays_dead_lettered() -> Result<(), QueueError> {
    let mut queues = dead_letters(5);
    queues.refused.insert("m3".into());
    let report = Redriver::new(&queues)
        .redrive(&request(1000, false))
        .await?;
    assert_eq!((report.moved, report.failed), (4, 1));
    let hidden: Vec<String> = lock(&queues.hidden)?
        .iter()
        .map(|m| m.message_id.clone())
        .collect();
    assert_eq!(
        hidden,
        vec!["m3"],
        "not deleted: it reappears in the dead-letter queue"
    );
    assert!(lock(&queues.work)?.iter().all(|m| m.message_id != "m3"));
    Ok(())
}

#[tokio::test]
async fn the_rate_limit_spaces_the_batches() -> Result<(), QueueError> {
    let queues = dead_letters(30);
    let started = Instant::now();
    let report = Redriver::new(&queues)
        .redrive(&RedriveRequest {
            max_messages: 30,
            dry_run: false,
            rate_per_second: 20,
        })
        .await?;
    assert_eq!(report.moved, 30);
    // 30 messages at 20 per second: the third batch of 10 is done no sooner than 1.5 s in.
    assert!(
        started.elapsed() >= Duration::from_millis(1500),
        "{:?}",
        started.elapsed()
    );
    Ok(())
}

#[test]
fn requests_read_with_defaults_and_out_of_range_fields_are_named() {
    let parsed: Result<RedriveRequest, _> = serde_json::from_str("{}");
    assert_eq!(parsed.ok(), Some(RedriveRequest::default()));
    let parsed: Result<RedriveRequest, _> =
        serde_json::from_str(r#"{"maxMessages": 0, "dryRun": true, "ratePerSecond": 5000}"#);
    let fields: Vec<&str> = parsed
        .map(|r| r.problems().into_iter().map(|(f, _)| f).collect())
        .unwrap_or_default();
    assert_eq!(fields, vec!["maxMessages", "ratePerSecond"]);
    let unknown: Result<RedriveRequest, _> = serde_json::from_str(r#"{"max": 3}"#);
    assert!(unknown.is_err());
}
