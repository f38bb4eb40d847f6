//! The analytics table as the aggregate store: parts and compacted snapshots per day.
//!
//! Layout (pk `AGG#<YYYY-MM-DD>`):
//! - `P#<window start ms>#<shard>#<first sequence>#<chunk>`: a window's part for the day;
//! - `C#<upto ms>#<chunk>`: a snapshot chunk (the day's hours); complete when all `chunks`
//!   chunks exist;
//! - `D#<upto ms>#<chunk>`: a chunk of the same version's daily summary (the hours summed), which
//!   whole-day reads take instead of the snapshot: `sk >= "D#"` reads summaries and parts only.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use aws_sdk_dynamodb::types::WriteRequest;

use super::batch::{delete, put};
use super::item::{n, number, query_all, s, text, Item};

use crate::aggregation::{AggregatePart, AggregateStore, CompactedDay, DayTotals, StoredDay};
use crate::store::StoreError;

pub struct DynamoAggregates {
    client: aws_sdk_dynamodb::Client,
    table: String,
    /// Write units consumed so far, in thousandths (DynamoDB reports fractions).
    consumed_milli: Arc<AtomicU64>,
}

fn pk(day: &str) -> String {
    format!("AGG#{day}")
}

impl DynamoAggregates {
    pub fn new(config: &aws_config::SdkConfig, table: String) -> Self {
        Self {
            client: super::cost::dynamodb_client(config),
            table,
            consumed_milli: Arc::default(),
        }
    }

    /// Write capacity units consumed by this store's writes (as DynamoDB reports them).
    pub fn consumed_write_units(&self) -> f64 {
        self.consumed_milli.load(Ordering::Relaxed) as f64 / 1000.0
    }

    /// The items of a day's partition, from sort key `from` on when given.
    async fn day_items(&self, day: &str, from: Option<&str>) -> Result<Vec<Item>, StoreError> {
        let query = self
            .client
            .query()
            .table_name(&self.table)
            .expression_attribute_values(":pk", s(pk(day)))
            .consistent_read(true);
        let query = match from {
            None => query.key_condition_expression("pk = :pk"),
            Some(from) => query
                .key_condition_expression("pk = :pk AND sk >= :from")
                .expression_attribute_values(":from", s(from)),
        };
        query_all(query).await
    }

    async fn write_all(&self, requests: Vec<WriteRequest>) -> Result<(), StoreError> {
        super::batch::write_all(&self.client, &self.table, requests, &self.consumed_milli).await
    }
}

const PART: &str = "P#";
const SNAPSHOT: &str = "C#";
const SUMMARY: &str = "D#";

/// A chunk of a snapshot or summary version: `<prefix><upto ms>#<chunk>`.
fn version_sk(prefix: &str, upto_ms: i64, chunk: usize) -> String {
    format!("{prefix}{:013}#{chunk:03}", upto_ms.max(0))
}

fn part(day: &str, item: &Item) -> AggregatePart {
    AggregatePart {
        day: day.to_owned(),
        window_start_ms: number(item, "ws").unwrap_or_default(),
        shard: text(item, "shard").unwrap_or_default().to_owned(),
        first_sequence: text(item, "first").unwrap_or_default().to_owned(),
        chunk: number(item, "chunk").unwrap_or_default() as u32,
        body: text(item, "body").unwrap_or_default().to_owned(),
    }
}

/// One version (an `upto`) of a snapshot or summary as read: its declared chunk count, the
/// chunks found and their sort keys.
#[derive(Default)]
struct Version {
    chunks: i64,
    bodies: BTreeMap<i64, String>,
    sort_keys: Vec<String>,
}

impl Version {
    fn is_complete(&self) -> bool {
        self.bodies.len() as i64 == self.chunks
    }
}

/// The versions of a snapshot or summary found in a day's partition, by `upto`.
#[derive(Default)]
struct Versions(BTreeMap<i64, Version>);

impl Versions {
    fn add(&mut self, item: &Item) {
        let (Some(sk), Some(upto), Some(chunks), Some(chunk), Some(body)) = (
            text(item, "sk"),
            number(item, "upto"),
            number(item, "chunks"),
            number(item, "chunk"),
            text(item, "body"),
        ) else {
            return;
        };
        let version = self.0.entry(upto).or_insert_with(|| Version {
            chunks,
            ..Version::default()
        });
        version.bodies.insert(chunk, body.to_owned());
        version.sort_keys.push(sk.to_owned());
    }

    fn newest_complete(&self) -> Option<i64> {
        self.0
            .iter()
            .rev()
            .find(|(_, v)| v.is_complete())
            .map(|(upto, _)| *upto)
    }
}

fn part_sk(p: &AggregatePart) -> String {
    format!(
        "{PART}{:013}#{}#{}#{:03}",
        p.window_start_ms.max(0),
        p.shard,
        p.first_sequence,
        p.chunk
    )
}

#[async_trait]
impl AggregateStore for DynamoAggregates {
    async fn put_parts(&self, parts: &[AggregatePart]) -> Result<(), StoreError> {
        let requests = parts
            .iter()
            .map(|p| {
                put(Item::from([
                    ("pk".to_owned(), s(pk(&p.day))),
                    ("sk".to_owned(), s(part_sk(p))),
                    ("ws".to_owned(), n(p.window_start_ms)),
                    ("shard".to_owned(), s(&p.shard)),
                    ("first".to_owned(), s(&p.first_sequence)),
                    ("chunk".to_owned(), n(p.chunk)),
                    ("body".to_owned(), s(&p.body)),
                ]))
            })
            .collect::<Result<Vec<_>, _>>()?;
        self.write_all(requests).await
    }

    async fn read_day(&self, day: &str) -> Result<StoredDay, StoreError> {
        let items = self.day_items(day, None).await?;
        let mut stored = StoredDay::default();
        let mut snapshots = Versions::default();
        let mut summaries = Versions::default();
        for item in items {
            let sk = text(&item, "sk").unwrap_or_default();
            if sk.starts_with(PART) {
                stored.parts.push(part(day, &item));
            } else if sk.starts_with(SNAPSHOT) {
                snapshots.add(&item);
            } else if sk.starts_with(SUMMARY) {
                summaries.add(&item);
            }
        }
        // The newest complete snapshot wins, with its summary when that is complete too;
        // everything else is stale.
        let newest = snapshots.newest_complete();
        for (upto, version) in snapshots.0 {
            if Some(upto) == newest {
                let daily = match summaries.0.remove(&upto) {
                    Some(summary) if summary.is_complete() => {
                        summary.bodies.into_values().collect()
                    }
                    Some(partial) => {
                        stored.stale_snapshots.extend(partial.sort_keys);
                        Vec::new()
                    }
                    None => Vec::new(),
                };
                stored.compacted = Some(CompactedDay {
                    upto_ms: upto,
                    chunks: version.bodies.into_values().collect(),
                    daily,
                });
            } else {
                stored.stale_snapshots.extend(version.sort_keys);
            }
        }
        for version in summaries.0.into_values() {
            stored.stale_snapshots.extend(version.sort_keys);
        }
        Ok(stored)
    }

    async fn read_day_totals(&self, day: &str) -> Result<Option<DayTotals>, StoreError> {
        // Summaries (`D#`) sort after snapshots (`C#`) and before parts (`P#`).
        let items = self.day_items(day, Some(SUMMARY)).await?;
        let mut parts = Vec::new();
        let mut summaries = Versions::default();
        for item in items {
            let sk = text(&item, "sk").unwrap_or_default();
            if sk.starts_with(PART) {
                parts.push(part(day, &item));
            } else if sk.starts_with(SUMMARY) {
                summaries.add(&item);
            }
        }
        let Some(upto) = summaries.newest_complete() else {
            return Ok(None);
        };
        let daily = summaries
            .0
            .remove(&upto)
            .map(|v| v.bodies.into_values().collect())
            .unwrap_or_default();
        Ok(Some(DayTotals {
            upto_ms: upto,
            daily,
            parts,
        }))
    }

    async fn write_compacted(
        &self,
        day: &str,
        compacted: &CompactedDay,
        superseded: &StoredDay,
    ) -> Result<(), StoreError> {
        let pk = pk(day);
        let mut written = BTreeSet::new();
        let mut puts = Vec::new();
        for (prefix, chunks) in [(SNAPSHOT, &compacted.chunks), (SUMMARY, &compacted.daily)] {
            for (i, body) in chunks.iter().enumerate() {
                let sk = version_sk(prefix, compacted.upto_ms, i);
                puts.push(put(Item::from([
                    ("pk".to_owned(), s(&pk)),
                    ("sk".to_owned(), s(&sk)),
                    ("upto".to_owned(), n(compacted.upto_ms)),
                    ("chunks".to_owned(), n(chunks.len())),
                    ("chunk".to_owned(), n(i)),
                    ("body".to_owned(), s(body)),
                ]))?);
                written.insert(sk);
            }
        }
        // The new snapshot and summary are complete before anything they supersede goes away.
        self.write_all(puts).await?;
        let mut stale: BTreeSet<String> = superseded.stale_snapshots.iter().cloned().collect();
        if let Some(previous) = &superseded.compacted {
            for (prefix, count) in [
                (SNAPSHOT, previous.chunks.len()),
                (SUMMARY, previous.daily.len()),
            ] {
                stale.extend((0..count).map(|i| version_sk(prefix, previous.upto_ms, i)));
            }
        }
        stale.extend(
            superseded
                .parts
                .iter()
                .filter(|p| p.window_start_ms <= compacted.upto_ms)
                .map(part_sk),
        );
        let deletes = stale
            .difference(&written)
            .map(|sk| delete(&pk, sk))
            .collect::<Result<Vec<_>, _>>()?;
        self.write_all(deletes).await
    }
}
