//! Live updates for open consoles, over the stack's API Gateway WebSocket API.
//!
//! One function (`live`) serves both sides:
//! - the socket's routes: `$connect` authenticates a read key and records the connection (with a
//!   TTL, as API Gateway closes a connection after two hours at most), `$disconnect` forgets it,
//!   `$default` ignores what a console sends;
//! - the analytics table's stream: each batch's lead writes become **one** message per open
//!   connection (the leads that changed and the stage changes among them), sent through the
//!   `@connections` management API. A connection that answers `GoneException` is forgotten.
//!
//! Pushes are best effort by design: a console that misses a message still shows the truth on its
//! next read, and the page reads again on every message and every 30 s. So a failed send is
//! counted and logged, and the batch is not retried for it (a retry would repeat the message to
//! every other console).
//!
//! Browsers cannot set headers on a WebSocket, so the key travels as a subprotocol:
//! `Sec-WebSocket-Protocol: tally.v1, key.<base64url of the key>`. The answer selects `tally.v1`
//! only, so the key is never echoed.

mod changes;
#[cfg(any(test, feature = "test-utils"))]
mod memory;
mod socket;
#[cfg(test)]
mod tests;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

pub use changes::{live_message, LiveBatch, LiveLead, LiveStreamEvent, MAX_LEADS_PER_MESSAGE};
#[cfg(any(test, feature = "test-utils"))]
pub use memory::{MemoryConnections, MemorySockets};
pub use socket::{LiveHub, LiveOutcome, SocketEvent, SocketResponse, PROTOCOL};

use crate::store::StoreError;

/// Open consoles at most; a `$connect` beyond it is refused with `429`.
pub const MAX_CONNECTIONS: usize = 1000;
/// How long a connection is kept: API Gateway's two-hour limit, plus a margin.
pub const CONNECTION_TTL_SECONDS: i64 = 2 * 3600 + 300;

/// One open console.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connection {
    pub id: String,
    pub connected_at: DateTime<Utc>,
    /// When the record may go (DynamoDB's TTL deletes it some time after).
    pub expires_at: DateTime<Utc>,
}

/// Where connections are kept.
#[async_trait]
pub trait Connections: Send + Sync {
    async fn add(&self, connection: &Connection) -> Result<(), StoreError>;
    /// Forgets a connection; one already gone is not an error.
    async fn remove(&self, id: &str) -> Result<(), StoreError>;
    /// Up to `limit` connections not expired at `now`.
    async fn open(&self, limit: usize, now: DateTime<Utc>) -> Result<Vec<String>, StoreError>;
}

/// Why a message did not reach a connection.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// The connection is closed (`GoneException`): forget it.
    #[error("the connection is gone")]
    Gone,
    #[error("send failed: {0}")]
    Failed(String),
}

/// The `@connections` management API.
#[async_trait]
pub trait SocketSender: Send + Sync {
    async fn send(&self, connection_id: &str, message: &[u8]) -> Result<(), SendError>;
}
