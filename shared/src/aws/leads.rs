//! The analytics table as the lead store.
//!
//! Layout:
//! - pk `LEAD#<leadId>`, sk `STATE`: the lead's fold state as JSON (`state`) and `version`, and
//!   its leaderboard entry: `board` (`B#<shard>`, the `byBoard` index's partition key), `score`
//!   (before decay), `lastActivity` (epoch milliseconds), `stage` (the stage last published),
//!   `events` and `company` (for the companies report), the only attributes the index
//!   projects; and `stageChange` (JSON) on the write that moved the stage, which the table's
//!   stream carries to the `stages` function; Their keys never change, so a lead write costs its index one write, and none when
//!   neither the score nor the last activity moved;
//! - pk `LEADFAIL`, sk `<leadId>`: a lead that could not be written (`lead_failures.rs`);
//! - pk `JOB#recompute`, sk `current`: the requested recompute of every lead (`jobs.rs`).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_dynamodb::operation::put_item::PutItemError;
use aws_sdk_dynamodb::types::{AttributeValue, KeysAndAttributes, ReturnConsumedCapacity};

use super::item::{n, number, query_all, s, text, Item};
use futures::{StreamExt, TryStreamExt};

use crate::scoring::{
    board_shard, indexed_email, BoardEntry, BoardLead, LeadReader, LeadRecord, LeadScore,
    LeadStore, LeadWrite, LeadWriteError, BOARD_SHARDS,
};
use crate::store::StoreError;

/// The analytics table's leaderboard index.
const BOARD_INDEX: &str = "byBoard";
/// Keys only: which lead items carry an email (lowercased), for `GET /v1/leads?email=`.
const EMAIL_INDEX: &str = "byEmail";
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

/// The condition of a versioned write: the stored `version` is still `expected`, or the item is
/// absent when `expected` is 0.
pub(super) fn version_condition(
    expected: u64,
) -> (&'static str, Option<HashMap<String, AttributeValue>>) {
    if expected == 0 {
        ("attribute_not_exists(pk)", None)
    } else {
        (
            "version = :expected",
            Some(HashMap::from([(":expected".to_owned(), n(expected))])),
        )
    }
}

fn board_key(shard: u32) -> String {
    format!("B#{shard:02}")
}

pub(super) fn key(pk: String, sk: String) -> Item {
    Item::from([("pk".to_owned(), s(pk)), ("sk".to_owned(), s(sk))])
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
        let (condition, values) = version_condition(expected);
        let request = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            // The units metered include the leaderboard index's write (README, "Real-time
            // scoring").
            .return_consumed_capacity(ReturnConsumedCapacity::Indexes);
        let request = request
            .condition_expression(condition)
            .set_expression_attribute_values(values);
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
impl LeadStore for DynamoLeads {
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
            let stage = text(&item, "stage").map(str::to_owned);
            found.insert(
                lead_id.to_owned(),
                LeadRecord {
                    state,
                    version,
                    stage,
                },
            );
        }
        Ok(found)
    }

    async fn write_lead(&self, write: LeadWrite<'_>, expected: u64) -> Result<(), LeadWriteError> {
        let json = serde_json::to_string(write.state).map_err(unavailable)?;
        let entry = BoardEntry::of(write.state);
        let mut item = Item::from([
            ("pk".to_owned(), s(lead_pk(write.lead_id))),
            ("sk".to_owned(), s(STATE_SK)),
            ("state".to_owned(), s(json)),
        ]);
        // A lead without events (re-folded from a history that has none) leaves the board.
        if write.state.events > 0 {
            item.insert("board".to_owned(), s(board_key(board_shard(write.lead_id))));
            item.insert("score".to_owned(), n(entry.score));
            item.insert("lastActivity".to_owned(), n(entry.last_activity_ms));
            item.insert("events".to_owned(), n(write.state.events));
            if let Some(company) = &write.state.profile.company {
                item.insert("company".to_owned(), s(company));
            }
        }
        if let Some(stage) = write.stage {
            item.insert("stage".to_owned(), s(stage));
        }
        // The `byEmail` index's key, for leads whose id is not their email already (those are
        // found by id): a sparse, keys-only index, written when such a lead first has an email
        // or changes it, not on every write.
        if let Some(email) = indexed_email(write.lead_id, &write.state.profile) {
            item.insert("email".to_owned(), s(email));
        }
        // The change rides on the write itself: the table's stream carries it to the `stages`
        // function, so recording it costs nothing more (the attribute is not projected).
        if let Some(change) = write.change {
            let json = serde_json::to_string(change).map_err(unavailable)?;
            item.insert("stageChange".to_owned(), s(json));
        }
        self.put_versioned(item, expected).await
    }

    async fn shard_board(&self, shard: u32) -> Result<Vec<BoardLead>, StoreError> {
        self.board_shard(shard).await
    }

    async fn unboarded_leads(
        &self,
        from: Option<String>,
        limit: usize,
    ) -> Result<(Vec<String>, Option<String>), StoreError> {
        // A one-off after an upgrade: a scan of the whole table, filtered to lead items without
        // their board attribute, one page (1 MB read) at a time.
        let mut ids = Vec::new();
        let mut start = from.map(|pk| key(pk, STATE_SK.to_owned()));
        loop {
            let output = self
                .client
                .scan()
                .table_name(&self.table)
                .filter_expression(
                    "begins_with(pk, :lead) AND sk = :state AND attribute_not_exists(board)",
                )
                .expression_attribute_values(":lead", s("LEAD#"))
                .expression_attribute_values(":state", s(STATE_SK))
                .projection_expression("pk")
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(|e| super::store_unavailable(&e))?;
            ids.extend(
                output
                    .items()
                    .iter()
                    .filter_map(|item| text(item, "pk")?.strip_prefix("LEAD#").map(str::to_owned)),
            );
            let next = output
                .last_evaluated_key()
                .and_then(|k| text(k, "pk"))
                .map(str::to_owned);
            match next {
                Some(pk) if ids.len() < limit => start = Some(key(pk, STATE_SK.to_owned())),
                next => return Ok((ids, next)),
            }
        }
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

    async fn board_leads(&self) -> Result<Vec<BoardLead>, StoreError> {
        let shards: Vec<Vec<BoardLead>> = futures::stream::iter(0..BOARD_SHARDS)
            .map(|shard| self.board_shard(shard))
            .buffered(16)
            .try_collect()
            .await?;
        Ok(shards.into_iter().flatten().collect())
    }

    async fn leads_by_email(&self, email: &str, limit: usize) -> Result<Vec<String>, StoreError> {
        let output = self
            .client
            .query()
            .table_name(&self.table)
            .index_name(EMAIL_INDEX)
            .key_condition_expression("email = :email")
            .expression_attribute_values(":email", s(email))
            .limit(i32::try_from(limit).unwrap_or(i32::MAX))
            .send()
            .await
            .map_err(|e| super::store_unavailable(&e))?;
        Ok(output
            .items()
            .iter()
            .filter_map(|item| text(item, "pk")?.strip_prefix("LEAD#").map(str::to_owned))
            .collect())
    }
}

impl DynamoLeads {
    /// One shard of the leaderboard index, every page of it.
    async fn board_shard(&self, shard: u32) -> Result<Vec<BoardLead>, StoreError> {
        let query = self
            .client
            .query()
            .table_name(&self.table)
            .index_name(BOARD_INDEX)
            .key_condition_expression("board = :board")
            .expression_attribute_values(":board", s(board_key(shard)));
        Ok(query_all(query)
            .await?
            .iter()
            .filter_map(|item| {
                let lead_id = text(item, "pk")?.strip_prefix("LEAD#")?;
                Some(BoardLead {
                    lead_id: lead_id.to_owned(),
                    entry: BoardEntry {
                        score: number(item, "score").unwrap_or_default(),
                        last_activity_ms: number(item, "lastActivity").unwrap_or_default(),
                    },
                    stage: text(item, "stage").map(str::to_owned),
                    company: text(item, "company").map(str::to_owned),
                    events: number(item, "events").unwrap_or_default().max(0) as u64,
                })
            })
            .collect())
    }
}
