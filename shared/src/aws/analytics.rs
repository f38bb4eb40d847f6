//! The analytics table as the aggregate store: parts and compacted snapshots per day.
//!
//! Layout (pk `AGG#<YYYY-MM-DD>`):
//! - `P#<window start ms>#<shard>#<first sequence>#<chunk>`: a window's part for the day;
//! - `C#<upto ms>#<chunk>`: a snapshot chunk; complete when all `chunks` chunks exist.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use aws_sdk_dynamodb::types::WriteRequest;

use super::batch::{delete, put};
use super::item::{n, number, query_all, s, text, Item};

use crate::aggregation::{AggregatePart, AggregateStore, CompactedDay, StoredDay};
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

    async fn write_all(&self, requests: Vec<WriteRequest>) -> Result<(), StoreError> {
        super::batch::write_all(&self.client, &self.table, requests, &self.consumed_milli).await
    }
}

fn part_sk(p: &AggregatePart) -> String {
    format!(
        "P#{:013}#{}#{}#{:03}",
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
        let items = query_all(
            self.client
                .query()
                .table_name(&self.table)
                .key_condition_expression("pk = :pk")
                .expression_attribute_values(":pk", s(pk(day)))
                .consistent_read(true),
        )
        .await?;
        let mut stored = StoredDay::default();
        // upto → (declared chunk count, chunk index → body, sort keys)
        let mut snapshots: BTreeMap<i64, (i64, BTreeMap<i64, String>, Vec<String>)> =
            BTreeMap::new();
        for item in items {
            let sk = text(&item, "sk").unwrap_or_default().to_owned();
            if sk.starts_with("P#") {
                stored.parts.push(AggregatePart {
                    day: day.to_owned(),
                    window_start_ms: number(&item, "ws").unwrap_or_default(),
                    shard: text(&item, "shard").unwrap_or_default().to_owned(),
                    first_sequence: text(&item, "first").unwrap_or_default().to_owned(),
                    chunk: number(&item, "chunk").unwrap_or_default() as u32,
                    body: text(&item, "body").unwrap_or_default().to_owned(),
                });
            } else if sk.starts_with("C#") {
                let (Some(upto), Some(chunks), Some(chunk), Some(body)) = (
                    number(&item, "upto"),
                    number(&item, "chunks"),
                    number(&item, "chunk"),
                    text(&item, "body"),
                ) else {
                    continue;
                };
                let entry = snapshots
                    .entry(upto)
                    .or_insert_with(|| (chunks, BTreeMap::new(), Vec::new()));
                entry.1.insert(chunk, body.to_owned());
                entry.2.push(sk);
            }
        }
        // The newest complete snapshot wins; everything older is stale.
        let newest_complete = snapshots
            .iter()
            .rev()
            .find(|(_, (chunks, bodies, _))| bodies.len() as i64 == *chunks)
            .map(|(u, _)| *u);
        for (upto, (_, bodies, sks)) in snapshots {
            if Some(upto) == newest_complete {
                stored.compacted = Some(CompactedDay {
                    upto_ms: upto,
                    chunks: bodies.into_values().collect(),
                });
            } else {
                stored.stale_snapshots.extend(sks);
            }
        }
        Ok(stored)
    }

    async fn write_compacted(
        &self,
        day: &str,
        compacted: &CompactedDay,
        superseded: &StoredDay,
    ) -> Result<(), StoreError> {
        let pk = pk(day);
        let puts = compacted
            .chunks
            .iter()
            .enumerate()
            .map(|(i, body)| {
                put(Item::from([
                    ("pk".to_owned(), s(&pk)),
                    (
                        "sk".to_owned(),
                        s(format!("C#{:013}#{i:03}", compacted.upto_ms.max(0))),
                    ),
                    ("upto".to_owned(), n(compacted.upto_ms)),
                    ("chunks".to_owned(), n(compacted.chunks.len())),
                    ("chunk".to_owned(), n(i)),
                    ("body".to_owned(), s(body)),
                ]))
            })
            .collect::<Result<Vec<_>, _>>()?;
        // The new snapshot is complete before anything it supersedes goes away.
        self.write_all(puts).await?;
        let mut deletes = Vec::new();
        for sk in &superseded.stale_snapshots {
            deletes.push(delete(&pk, sk)?);
        }
        if let Some(previous) = &superseded.compacted {
            for i in 0..previous.chunks.len() {
                if previous.upto_ms != compacted.upto_ms {
                    deletes.push(delete(
                        &pk,
                        &format!("C#{:013}#{i:03}", previous.upto_ms.max(0)),
                    )?);
                }
            }
        }
        for part in superseded
            .parts
            .iter()
            .filter(|p| p.window_start_ms <= compacted.upto_ms)
        {
            deletes.push(delete(&pk, &part_sk(part))?);
        }
        self.write_all(deletes).await
    }
}
