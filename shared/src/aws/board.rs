//! Leaderboard shards in the analytics table, any size: a shard's gzipped body is split into
//! chunks below DynamoDB's 400 KB item limit.
//!
//! - pk `BOARD#<shard>`, sk `v#<version>`: the version item, written last and only if absent
//!   (the optimistic lock): the first chunk of the body, `chunks` (how many), `writeId`,
//!   `decayedAsOf`, `leads`, `version`.
//! - pk `BOARD#<shard>`, sk `c#<version>#<writeId>#<index>`: the other chunks, written before
//!   the version item. The write id keeps a writer that loses the race for a version from
//!   overwriting the winner's chunks; the loser deletes its own.
//!
//! A superseded version (and its chunks) gets an `expiresAt` two hours away, so a leaderboard
//! pagination can keep reading the versions it started on.

use aws_sdk_dynamodb::operation::put_item::PutItemError;
use aws_sdk_dynamodb::primitives::Blob;
use aws_sdk_dynamodb::types::{AttributeValue, ReturnConsumedCapacity, ReturnValue};

use super::batch::{delete, put, write_all};
use super::item::{binary, n, number, s, text, Item};
use super::leads::DynamoLeads;
use crate::scoring::{BoardShard, LeadWriteError};
use crate::store::StoreError;

/// Bytes of compressed body one item holds (DynamoDB's limit is 400 KB per item).
pub(super) const BOARD_CHUNK_BYTES: usize = 300 * 1024;

/// How long a superseded leaderboard version outlives its successor: longer than a cursor lives.
const BOARD_VERSION_RETENTION_SECS: i64 = 2 * 3600;

pub(super) fn board_pk(shard: u32) -> String {
    format!("BOARD#{shard:03}")
}

pub(super) fn board_sk(version: u64) -> String {
    format!("v#{version:012}")
}

fn chunk_sk(version: u64, write_id: &str, index: usize) -> String {
    format!("c#{version:012}#{write_id}#{index:04}")
}

fn unavailable(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

impl DynamoLeads {
    /// The newest version of a shard (empty at version 0 when none is stored).
    pub(super) async fn latest_board(&self, shard: u32) -> Result<BoardShard, StoreError> {
        let output = self
            .client
            .query()
            .table_name(&self.table)
            .key_condition_expression("pk = :pk AND begins_with(sk, :version)")
            .expression_attribute_values(":pk", s(board_pk(shard)))
            .expression_attribute_values(":version", s("v#"))
            .scan_index_forward(false)
            .limit(1)
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| super::store_unavailable(&e))?;
        match output.items().first() {
            Some(item) => self.assemble(shard, item).await,
            None => Ok(BoardShard::default()),
        }
    }

    /// The shard from its version item, reading its other chunks.
    pub(super) async fn assemble(&self, shard: u32, item: &Item) -> Result<BoardShard, StoreError> {
        let version = number(item, "version").unwrap_or_default().max(0) as u64;
        let chunks = usize::try_from(number(item, "chunks").unwrap_or(1)).unwrap_or(1);
        let mut body = binary(item, "body").unwrap_or_default().to_vec();
        if chunks > 1 {
            let write_id = text(item, "writeId").unwrap_or_default();
            let keys: Vec<Item> = (1..chunks)
                .map(|i| key(board_pk(shard), chunk_sk(version, write_id, i)))
                .collect();
            let mut found: Vec<(String, Vec<u8>)> = self
                .batch_get(keys)
                .await?
                .iter()
                .map(|c| {
                    (
                        text(c, "sk").unwrap_or_default().to_owned(),
                        binary(c, "body").unwrap_or_default().to_vec(),
                    )
                })
                .collect();
            if found.len() != chunks - 1 {
                return Err(unavailable(format!(
                    "leaderboard shard {shard} version {version} is missing chunks"
                )));
            }
            found.sort();
            for (_, chunk) in found {
                body.extend(chunk);
            }
        }
        Ok(BoardShard {
            entries: BoardShard::decompress(&body).map_err(unavailable)?,
            decayed_as_of_ms: number(item, "decayedAsOf").unwrap_or_default(),
            version,
        })
    }

    /// Writes `board` as version `board.version + 1` if no one else wrote it first.
    pub(super) async fn write_board(
        &self,
        shard: u32,
        board: &BoardShard,
    ) -> Result<(), LeadWriteError> {
        let next = board.version + 1;
        let body = board.compress();
        let mut chunks: Vec<&[u8]> = body.chunks(BOARD_CHUNK_BYTES).collect();
        if chunks.is_empty() {
            chunks.push(&[]);
        }
        let write_id = uuid::Uuid::new_v4().simple().to_string();
        let extra: Vec<Item> = chunks
            .iter()
            .enumerate()
            .skip(1)
            .map(|(i, chunk)| {
                Item::from([
                    ("pk".to_owned(), s(board_pk(shard))),
                    ("sk".to_owned(), s(chunk_sk(next, &write_id, i))),
                    ("body".to_owned(), AttributeValue::B(Blob::new(*chunk))),
                ])
            })
            .collect();
        let extra_keys: Vec<String> = extra
            .iter()
            .filter_map(|i| text(i, "sk").map(str::to_owned))
            .collect();
        if !extra.is_empty() {
            let requests = extra.into_iter().map(put).collect::<Result<Vec<_>, _>>()?;
            write_all(&self.client, &self.table, requests, &self.consumed_milli).await?;
        }
        let item = Item::from([
            ("pk".to_owned(), s(board_pk(shard))),
            ("sk".to_owned(), s(board_sk(next))),
            ("body".to_owned(), AttributeValue::B(Blob::new(chunks[0]))),
            ("chunks".to_owned(), n(chunks.len())),
            ("writeId".to_owned(), s(&write_id)),
            ("decayedAsOf".to_owned(), n(board.decayed_as_of_ms)),
            ("leads".to_owned(), n(board.entries.len())),
            ("version".to_owned(), n(next)),
        ]);
        let result = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .condition_expression("attribute_not_exists(pk)")
            .return_consumed_capacity(ReturnConsumedCapacity::Total)
            .send()
            .await;
        match result {
            Ok(output) => {
                super::batch::meter(&self.consumed_milli, output.consumed_capacity());
                if board.version > 0 {
                    self.expire_board_version(shard, board.version).await;
                }
                Ok(())
            }
            Err(e) => {
                // Lost the race (or failed): the chunks written for this attempt are nobody's.
                self.delete_chunks(shard, &extra_keys).await;
                Err(match e.as_service_error() {
                    Some(PutItemError::ConditionalCheckFailedException(_)) => {
                        LeadWriteError::Conflict
                    }
                    _ => LeadWriteError::Store(super::store_unavailable(&e)),
                })
            }
        }
    }

    async fn delete_chunks(&self, shard: u32, sks: &[String]) {
        let requests: Result<Vec<_>, _> =
            sks.iter().map(|sk| delete(&board_pk(shard), sk)).collect();
        let result = match requests {
            Ok(requests) => {
                write_all(&self.client, &self.table, requests, &self.consumed_milli).await
            }
            Err(e) => Err(e),
        };
        if let Err(e) = result {
            tracing::warn!(shard, error = %e, "chunks of a lost leaderboard write left behind");
        }
    }

    /// Gives a superseded version and its chunks their expiry. Best effort: a version left
    /// without one only costs storage.
    async fn expire_board_version(&self, shard: u32, version: u64) {
        let expires = chrono::Utc::now().timestamp() + BOARD_VERSION_RETENTION_SECS;
        let expire = |sk: String| {
            self.client
                .update_item()
                .table_name(&self.table)
                .key("pk", s(board_pk(shard)))
                .key("sk", s(sk))
                .update_expression("SET expiresAt = :t")
                .condition_expression("attribute_exists(pk)")
                .expression_attribute_values(":t", n(expires))
                .return_consumed_capacity(ReturnConsumedCapacity::Total)
        };
        let result = expire(board_sk(version))
            .return_values(ReturnValue::AllOld)
            .send()
            .await;
        let old = match result {
            Ok(output) => {
                super::batch::meter(&self.consumed_milli, output.consumed_capacity());
                output.attributes.unwrap_or_default()
            }
            Err(e) => {
                tracing::warn!(shard, version, error = %super::describe(&e), "superseded leaderboard version left without expiry");
                return;
            }
        };
        let chunks = usize::try_from(number(&old, "chunks").unwrap_or(1)).unwrap_or(1);
        let write_id = text(&old, "writeId").unwrap_or_default();
        for i in 1..chunks {
            match expire(chunk_sk(version, write_id, i)).send().await {
                Ok(output) => super::batch::meter(&self.consumed_milli, output.consumed_capacity()),
                Err(e) => {
                    tracing::warn!(shard, version, chunk = i, error = %super::describe(&e), "superseded leaderboard chunk left without expiry")
                }
            }
        }
    }
}

pub(super) fn key(pk: String, sk: String) -> Item {
    Item::from([("pk".to_owned(), s(pk)), ("sk".to_owned(), s(sk))])
}
