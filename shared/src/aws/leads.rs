//! The analytics table as the lead store.
//!
//! Layout:
//! - pk `LEADLOG`, sk `<window start ms>#<shard>#<first sequence>`: a window's lead-log part,
//!   `body` the gzipped entries (binary);
//! - pk `LEAD#<leadId>`, sk `STATE`: the lead's fold state as JSON (`state`) and `version`;
//! - pk `BOARD#<shard>`: the leaderboard shard's versions, each in chunks below the item limit
//!   (`board.rs`). Every write adds a version (conditional on it not existing, which is the
//!   optimistic lock) and gives the one it supersedes an `expiresAt` (TTL) two hours away, so a
//!   leaderboard cursor can page through the versions it started on;
//! - pk `LEADFAIL`, sk `<leadId>`: a lead that could not be written (`lead_failures.rs`);
//! - pk `JOB#recompute`, sk `current`: the requested recompute of every lead (`jobs.rs`).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_dynamodb::operation::put_item::PutItemError;
use aws_sdk_dynamodb::primitives::Blob;
use aws_sdk_dynamodb::types::{AttributeValue, KeysAndAttributes, ReturnConsumedCapacity};

use super::batch::{delete, put, write_all};
use super::board::{board_pk, board_sk, key};
use super::item::{binary, n, number, s, text, Item};
use futures::{StreamExt, TryStreamExt};

use crate::scoring::{
    compress_entries, decompress_entries, BoardShard, LeadLogPart, LeadLogSink, LeadReader,
    LeadRecord, LeadScore, LeadStore, LeadWriteError, BOARD_SHARDS,
};
use crate::store::StoreError;

const LOG_PK: &str = "LEADLOG";
const STATE_SK: &str = "STATE";
/// `BatchGetItem` takes at most 100 keys.
const GET_BATCH: usize = 100;
const ATTEMPTS: u32 = 8;

pub struct DynamoLeads {
    pub(super) client: aws_sdk_dynamodb::Client,
    pub(super) table: String,
    pub(super) consumed_milli: Arc<AtomicU64>,
}

fn lead_pk(lead_id: &str) -> String {
    format!("LEAD#{lead_id}")
}

fn log_sk(p: &LeadLogPart) -> String {
    format!("{:013}#{}#{}", p.window_start_ms, p.shard, p.first_sequence)
}

fn unavailable(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

impl DynamoLeads {
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

    /// A conditional put of a versioned item: `version = expected`, or absent when `expected`
    /// is 0.
    async fn put_versioned(&self, mut item: Item, expected: u64) -> Result<(), LeadWriteError> {
        item.insert("version".into(), n(expected + 1));
        let mut request = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .return_consumed_capacity(ReturnConsumedCapacity::Total);
        request = if expected == 0 {
            request.condition_expression("attribute_not_exists(pk)")
        } else {
            request
                .condition_expression("version = :expected")
                .expression_attribute_values(":expected", n(expected))
        };
        match request.send().await {
            Ok(output) => {
                super::batch::meter(&self.consumed_milli, output.consumed_capacity());
                Ok(())
            }
            Err(e) => match e.as_service_error() {
                Some(PutItemError::ConditionalCheckFailedException(_)) => {
                    Err(LeadWriteError::Conflict)
                }
                _ => Err(LeadWriteError::Store(StoreError::Unavailable(
                    super::describe(&e),
                ))),
            },
        }
    }
}

#[async_trait]
impl LeadLogSink for DynamoLeads {
    async fn put_log(&self, parts: &[LeadLogPart]) -> Result<(), StoreError> {
        let requests = parts
            .iter()
            .map(|p| {
                put(Item::from([
                    ("pk".to_owned(), s(LOG_PK)),
                    ("sk".to_owned(), s(log_sk(p))),
                    (
                        "body".to_owned(),
                        AttributeValue::B(Blob::new(compress_entries(&p.entries))),
                    ),
                ]))
            })
            .collect::<Result<Vec<_>, _>>()?;
        write_all(&self.client, &self.table, requests, &self.consumed_milli).await
    }
}

#[async_trait]
impl LeadStore for DynamoLeads {
    async fn pending_log(&self, limit: usize) -> Result<Vec<LeadLogPart>, StoreError> {
        let output = self
            .client
            .query()
            .table_name(&self.table)
            .key_condition_expression("pk = :pk")
            .expression_attribute_values(":pk", s(LOG_PK))
            .consistent_read(true)
            .limit(i32::try_from(limit).unwrap_or(i32::MAX))
            .send()
            .await
            .map_err(|e| super::store_unavailable(&e))?;
        output
            .items()
            .iter()
            .map(|item| {
                let sk = text(item, "sk").unwrap_or_default();
                // `<ws>#<shard>#<first>`: shard ids contain no `#`; sequence numbers are digits.
                let mut fields = sk.splitn(3, '#');
                let (Some(ws), Some(shard), Some(first)) =
                    (fields.next(), fields.next(), fields.next())
                else {
                    return Err(unavailable(format!("lead log key {sk:?} unreadable")));
                };
                let entries = decompress_entries(binary(item, "body").unwrap_or_default())
                    .map_err(unavailable)?;
                Ok(LeadLogPart {
                    window_start_ms: ws.parse().map_err(unavailable)?,
                    shard: shard.to_owned(),
                    first_sequence: first.to_owned(),
                    entries,
                })
            })
            .collect()
    }

    async fn delete_log(&self, parts: &[LeadLogPart]) -> Result<(), StoreError> {
        let requests = parts
            .iter()
            .map(|p| delete(LOG_PK, &log_sk(p)))
            .collect::<Result<Vec<_>, _>>()?;
        write_all(&self.client, &self.table, requests, &self.consumed_milli).await
    }

    async fn get_leads(
        &self,
        lead_ids: &[&str],
    ) -> Result<HashMap<String, LeadRecord>, StoreError> {
        let keys = lead_ids
            .iter()
            .map(|id| key(lead_pk(id), STATE_SK.to_owned()));
        let mut found = HashMap::new();
        for item in self.batch_get(keys.collect()).await? {
            let Some(lead_id) = text(&item, "pk").and_then(|pk| pk.strip_prefix("LEAD#")) else {
                continue;
            };
            let state: LeadScore = serde_json::from_str(text(&item, "state").unwrap_or(""))
                .map_err(|e| unavailable(format!("lead state unreadable: {e}")))?;
            let version = number(&item, "version").unwrap_or_default().max(0) as u64;
            found.insert(lead_id.to_owned(), LeadRecord { state, version });
        }
        Ok(found)
    }

    async fn put_lead(
        &self,
        lead_id: &str,
        state: &LeadScore,
        expected: u64,
    ) -> Result<(), LeadWriteError> {
        let json = serde_json::to_string(state).map_err(unavailable)?;
        let item = Item::from([
            ("pk".to_owned(), s(lead_pk(lead_id))),
            ("sk".to_owned(), s(STATE_SK)),
            ("state".to_owned(), s(json)),
        ]);
        self.put_versioned(item, expected).await
    }

    async fn get_board(&self, shard: u32) -> Result<BoardShard, StoreError> {
        self.latest_board(shard).await
    }

    async fn put_board(&self, shard: u32, board: &BoardShard) -> Result<(), LeadWriteError> {
        self.write_board(shard, board).await
    }
}

impl DynamoLeads {
    /// `BatchGetItem` of any number of keys, 100 at a time, retrying unprocessed keys.
    pub(super) async fn batch_get(&self, keys: Vec<Item>) -> Result<Vec<Item>, StoreError> {
        let mut found = Vec::with_capacity(keys.len());
        for group in keys.chunks(GET_BATCH) {
            let mut pending = Some(
                KeysAndAttributes::builder()
                    .set_keys(Some(group.to_vec()))
                    .consistent_read(true)
                    .build()
                    .map_err(unavailable)?,
            );
            let mut attempt = 0;
            while let Some(request) = pending.take() {
                if attempt >= ATTEMPTS {
                    return Err(unavailable("reads left unprocessed after retries"));
                }
                if attempt > 0 {
                    tokio::time::sleep(Duration::from_millis(20 << attempt.min(6))).await;
                }
                attempt += 1;
                let output = self
                    .client
                    .batch_get_item()
                    .request_items(&self.table, request)
                    .send()
                    .await
                    .map_err(|e| super::store_unavailable(&e))?;
                if let Some(items) = output.responses().and_then(|r| r.get(&self.table)) {
                    found.extend(items.iter().cloned());
                }
                pending = output
                    .unprocessed_keys()
                    .and_then(|u| u.get(&self.table))
                    .filter(|k| !k.keys().is_empty())
                    .cloned();
            }
        }
        Ok(found)
    }
}

#[async_trait]
impl LeadReader for DynamoLeads {
    async fn leads(&self, lead_ids: &[&str]) -> Result<HashMap<String, LeadRecord>, StoreError> {
        self.get_leads(lead_ids).await
    }

    async fn latest_boards(&self) -> Result<Vec<BoardShard>, StoreError> {
        futures::stream::iter(0..BOARD_SHARDS)
            .map(|shard| self.get_board(shard))
            .buffered(16)
            .try_collect()
            .await
    }

    async fn boards_at(&self, versions: &[u64]) -> Result<Option<Vec<BoardShard>>, StoreError> {
        let keys: Vec<Item> = (0u32..)
            .zip(versions)
            .filter(|(_, v)| **v > 0)
            .map(|(shard, v)| key(board_pk(shard), board_sk(*v)))
            .collect();
        let wanted = keys.len();
        let mut by_shard: HashMap<String, BoardShard> = HashMap::new();
        for item in self.batch_get(keys).await? {
            let pk = text(&item, "pk").unwrap_or_default().to_owned();
            let shard = pk
                .strip_prefix("BOARD#")
                .and_then(|s| s.parse().ok())
                .unwrap_or_default();
            by_shard.insert(pk, self.assemble(shard, &item).await?);
        }
        if by_shard.len() < wanted {
            return Ok(None);
        }
        Ok(Some(
            (0u32..)
                .zip(versions)
                .map(|(shard, _)| by_shard.remove(&board_pk(shard)).unwrap_or_default())
                .collect(),
        ))
    }
}
