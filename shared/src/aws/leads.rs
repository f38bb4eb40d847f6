//! The analytics table as the lead store.
//!
//! Layout:
//! - pk `LEADLOG`, sk `<window start ms>#<shard>#<first sequence>`: a window's lead-log part,
//!   `body` the gzipped entries (binary);
//! - pk `LEAD#<leadId>`, sk `STATE`: the lead's fold state as JSON (`state`) and `version`;
//! - pk `BOARD`, sk `<shard>`: a leaderboard shard, `body` gzipped, `version`, `decayedAsOf`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_dynamodb::operation::put_item::PutItemError;
use aws_sdk_dynamodb::primitives::Blob;
use aws_sdk_dynamodb::types::{AttributeValue, KeysAndAttributes, ReturnConsumedCapacity};

use super::batch::{delete, put, write_all};
use super::item::{binary, n, number, s, text, Item};
use crate::scoring::{
    compress_entries, decompress_entries, BoardShard, LeadLogPart, LeadLogSink, LeadRecord,
    LeadScore, LeadStore, LeadWriteError,
};
use crate::store::StoreError;

const LOG_PK: &str = "LEADLOG";
const BOARD_PK: &str = "BOARD";
const STATE_SK: &str = "STATE";
/// `BatchGetItem` takes at most 100 keys.
const GET_BATCH: usize = 100;
const ATTEMPTS: u32 = 8;

pub struct DynamoLeads {
    client: aws_sdk_dynamodb::Client,
    table: String,
    consumed_milli: Arc<AtomicU64>,
}

fn lead_pk(lead_id: &str) -> String {
    format!("LEAD#{lead_id}")
}

fn log_sk(p: &LeadLogPart) -> String {
    format!("{:013}#{}#{}", p.window_start_ms, p.shard, p.first_sequence)
}

fn board_sk(shard: u32) -> String {
    format!("{shard:03}")
}

fn unavailable(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

impl DynamoLeads {
    pub fn new(config: &aws_config::SdkConfig, table: String) -> Self {
        Self {
            client: aws_sdk_dynamodb::Client::new(config),
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
            .map_err(|e| StoreError::Unavailable(super::describe(&e)))?;
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
        let mut found = HashMap::new();
        for group in lead_ids.chunks(GET_BATCH) {
            let keys: Vec<Item> = group
                .iter()
                .map(|id| {
                    Item::from([
                        ("pk".to_owned(), s(lead_pk(id))),
                        ("sk".to_owned(), s(STATE_SK)),
                    ])
                })
                .collect();
            let mut pending = Some(
                KeysAndAttributes::builder()
                    .set_keys(Some(keys))
                    .consistent_read(true)
                    .build()
                    .map_err(unavailable)?,
            );
            let mut attempt = 0;
            while let Some(request) = pending.take() {
                if attempt >= ATTEMPTS {
                    return Err(unavailable("lead reads left unprocessed after retries"));
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
                    .map_err(|e| StoreError::Unavailable(super::describe(&e)))?;
                for item in output
                    .responses()
                    .and_then(|r| r.get(&self.table))
                    .into_iter()
                    .flatten()
                {
                    let Some(lead_id) = text(item, "pk").and_then(|pk| pk.strip_prefix("LEAD#"))
                    else {
                        continue;
                    };
                    let state: LeadScore = serde_json::from_str(text(item, "state").unwrap_or(""))
                        .map_err(|e| unavailable(format!("lead state unreadable: {e}")))?;
                    let version = number(item, "version").unwrap_or_default().max(0) as u64;
                    found.insert(lead_id.to_owned(), LeadRecord { state, version });
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
        let output = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("pk", s(BOARD_PK))
            .key("sk", s(board_sk(shard)))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| StoreError::Unavailable(super::describe(&e)))?;
        let Some(item) = output.item() else {
            return Ok(BoardShard::default());
        };
        Ok(BoardShard {
            entries: BoardShard::decompress(binary(item, "body").unwrap_or_default())
                .map_err(unavailable)?,
            decayed_as_of_ms: number(item, "decayedAsOf").unwrap_or_default(),
            version: number(item, "version").unwrap_or_default().max(0) as u64,
        })
    }

    async fn put_board(&self, shard: u32, board: &BoardShard) -> Result<(), LeadWriteError> {
        let item = Item::from([
            ("pk".to_owned(), s(BOARD_PK)),
            ("sk".to_owned(), s(board_sk(shard))),
            (
                "body".to_owned(),
                AttributeValue::B(Blob::new(board.compress())),
            ),
            ("decayedAsOf".to_owned(), n(board.decayed_as_of_ms)),
            ("leads".to_owned(), n(board.entries.len())),
        ]);
        self.put_versioned(item, board.version).await
    }
}
