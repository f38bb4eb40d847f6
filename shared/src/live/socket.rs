//! The `live` function's two kinds of invocation: a WebSocket route, or a stream batch to push.

use std::collections::HashMap;
use std::sync::Arc;

use base64::Engine as _;
use chrono::{DateTime, Duration, Utc};
use futures::StreamExt as _;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tracing::{info, warn, Instrument};

use super::changes::{live_message, LiveBatch, LiveStreamEvent};
use super::{
    Connection, Connections, SendError, SocketSender, CONNECTION_TTL_SECONDS, MAX_CONNECTIONS,
};
use crate::auth::Scope;
use crate::error::ApiError;
use crate::observability::Metrics;
use crate::secrets::SecretsCache;

/// The subprotocol a console asks for and the answer selects.
pub const PROTOCOL: &str = "tally.v1";
/// The subprotocol that carries the key, base64url-encoded after it.
const KEY_PROTOCOL_PREFIX: &str = "key.";
/// A `Sec-WebSocket-Protocol` header longer than this is refused before any decoding.
const MAX_PROTOCOL_HEADER: usize = 2048;
/// Sends in flight at once during a push.
const SEND_CONCURRENCY: usize = 16;

/// An API Gateway WebSocket route's event (Lambda proxy); only what is read is typed.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SocketEvent {
    pub request_context: SocketContext,
    #[serde(default)]
    pub headers: Option<HashMap<String, String>>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SocketContext {
    pub route_key: String,
    pub connection_id: String,
    #[serde(default)]
    pub request_id: Option<String>,
}

/// The route's answer; for `$connect`, a non-2xx status refuses the handshake.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SocketResponse {
    pub status_code: u16,
    #[serde(skip_serializing_if = "HashMap::is_empty")]
    pub headers: HashMap<String, String>,
}

impl SocketResponse {
    fn status(status_code: u16) -> Self {
        Self {
            status_code,
            headers: HashMap::new(),
        }
    }
}

/// Figures of one push, for logs, metrics and tests.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LiveOutcome {
    pub records: usize,
    pub leads: usize,
    pub stage_changes: usize,
    pub connections: usize,
    pub sent: usize,
    pub gone: usize,
    pub failed: usize,
}

pub struct LiveHub {
    keys: SecretsCache,
    connections: Arc<dyn Connections>,
    sender: Arc<dyn SocketSender>,
}

impl LiveHub {
    pub fn new(
        keys: SecretsCache,
        connections: Arc<dyn Connections>,
        sender: Arc<dyn SocketSender>,
    ) -> Self {
        Self {
            keys,
            connections,
            sender,
        }
    }

    /// One invocation: a stream batch (it has `Records`) or a socket route.
    pub async fn handle(&self, event: Value, now: DateTime<Utc>) -> Value {
        if event.get("Records").is_some() {
            let outcome = match serde_json::from_value::<LiveStreamEvent>(event) {
                Ok(batch) => self.push(&batch, now).await,
                Err(error) => {
                    warn!(%error, "stream batch unreadable; nothing pushed");
                    LiveOutcome::default()
                }
            };
            info!(
                records = outcome.records,
                leads = outcome.leads,
                connections = outcome.connections,
                sent = outcome.sent,
                gone = outcome.gone,
                failed = outcome.failed,
                "pushed"
            );
            // Best effort (see the module): every record counts as handled.
            return json!({"batchItemFailures": []});
        }
        let response = match serde_json::from_value::<SocketEvent>(event) {
            Ok(event) => self.socket(&event, now).await,
            Err(error) => {
                warn!(%error, "socket event unreadable");
                SocketResponse::status(400)
            }
        };
        serde_json::to_value(response).unwrap_or_else(|_| json!({"statusCode": 500}))
    }

    pub async fn socket(&self, event: &SocketEvent, now: DateTime<Utc>) -> SocketResponse {
        let context = &event.request_context;
        let span = tracing::info_span!(
            "socket",
            route = %context.route_key,
            connection_id = %context.connection_id,
            correlation_id = %context.request_id.as_deref().unwrap_or_default(),
        );
        async {
            let mut metrics = Metrics::new("live");
            metrics.property("route", context.route_key.as_str());
            let response = match context.route_key.as_str() {
                "$connect" => match self.connect(event, now).await {
                    Ok(response) => {
                        metrics.count("ConnectionsOpened", 1);
                        response
                    }
                    Err(refusal) => {
                        info!(
                            status = refusal.status,
                            reason = refusal.reason,
                            "connection refused"
                        );
                        metrics.count("ConnectionsRefused", 1);
                        SocketResponse::status(refusal.status)
                    }
                },
                "$disconnect" => {
                    if let Err(error) = self.connections.remove(&context.connection_id).await {
                        // Its TTL removes it later; a push that finds it gone removes it sooner.
                        warn!(%error, "connection not forgotten");
                    }
                    SocketResponse::status(200)
                }
                // Consoles only listen; whatever they send is ignored.
                _ => SocketResponse::status(200),
            };
            metrics.flush();
            response
        }
        .instrument(span)
        .await
    }

    async fn connect(
        &self,
        event: &SocketEvent,
        now: DateTime<Utc>,
    ) -> Result<SocketResponse, Refusal> {
        let key = presented_key(event)?;
        self.keys
            .get()
            .await?
            .api_keys
            .authorize(Some(&format!("Bearer {key}")), Scope::Read)?;
        let open = self
            .connections
            .open(MAX_CONNECTIONS, now)
            .await
            .map_err(|_| ApiError::unavailable("connections table"))?;
        if open.len() >= MAX_CONNECTIONS {
            return Err(Refusal {
                status: 429,
                reason: "TOO_MANY_CONNECTIONS",
            });
        }
        let connection = Connection {
            id: event.request_context.connection_id.clone(),
            connected_at: now,
            expires_at: now + Duration::seconds(CONNECTION_TTL_SECONDS),
        };
        self.connections
            .add(&connection)
            .await
            .map_err(|_| ApiError::unavailable("connections table"))?;
        Ok(SocketResponse {
            status_code: 200,
            headers: HashMap::from([("Sec-WebSocket-Protocol".to_owned(), PROTOCOL.to_owned())]),
        })
    }

    /// Sends one message per open connection for the batch; forgets the gone ones.
    pub async fn push(&self, event: &LiveStreamEvent, now: DateTime<Utc>) -> LiveOutcome {
        let batch = LiveBatch::of(event);
        let mut outcome = LiveOutcome {
            records: batch.records,
            leads: batch.leads.len(),
            stage_changes: batch.stage_changes.len(),
            ..LiveOutcome::default()
        };
        if batch.leads.is_empty() {
            return outcome;
        }
        let mut metrics = Metrics::new("live");
        let ids = match self.connections.open(MAX_CONNECTIONS, now).await {
            Ok(ids) => ids,
            Err(error) => {
                warn!(%error, "connections unreadable; nothing pushed");
                metrics.count("PushFailures", 1);
                metrics.flush();
                return outcome;
            }
        };
        outcome.connections = ids.len();
        let message = live_message(&batch);
        let results: Vec<(String, Result<(), SendError>)> = futures::stream::iter(ids)
            .map(|id| {
                let message = &message;
                async move {
                    let result = self.sender.send(&id, message).await;
                    (id, result)
                }
            })
            .buffer_unordered(SEND_CONCURRENCY)
            .collect()
            .await;
        for (id, result) in results {
            match result {
                Ok(()) => outcome.sent += 1,
                Err(SendError::Gone) => {
                    outcome.gone += 1;
                    if let Err(error) = self.connections.remove(&id).await {
                        warn!(connection_id = %id, %error, "gone connection not forgotten");
                    }
                }
                Err(SendError::Failed(error)) => {
                    outcome.failed += 1;
                    warn!(connection_id = %id, %error, "message not sent");
                }
            }
        }
        metrics.count("LeadsPushed", outcome.leads as u64);
        metrics.count("MessagesSent", outcome.sent as u64);
        metrics.count("ConnectionsGone", outcome.gone as u64);
        metrics.count("SendFailures", outcome.failed as u64);
        metrics.flush();
        outcome
    }
}

/// Why a `$connect` was refused: its status (the handshake's answer) and a code for the logs.
struct Refusal {
    status: u16,
    reason: &'static str,
}

impl From<ApiError> for Refusal {
    fn from(error: ApiError) -> Self {
        Self {
            status: error.status(),
            reason: error.code(),
        }
    }
}

/// The read key from `Sec-WebSocket-Protocol: tally.v1, key.<base64url>`; cheap checks first.
fn presented_key(event: &SocketEvent) -> Result<String, ApiError> {
    let header = event
        .headers
        .iter()
        .flatten()
        .find(|(name, _)| name.eq_ignore_ascii_case("sec-websocket-protocol"))
        .map(|(_, value)| value.as_str())
        .ok_or(ApiError::Unauthorized)?;
    if header.len() > MAX_PROTOCOL_HEADER {
        return Err(ApiError::Unauthorized);
    }
    let protocols: Vec<&str> = header.split(',').map(str::trim).collect();
    if !protocols.contains(&PROTOCOL) {
        return Err(ApiError::Unauthorized);
    }
    let encoded = protocols
        .iter()
        .find_map(|p| p.strip_prefix(KEY_PROTOCOL_PREFIX))
        .ok_or(ApiError::Unauthorized)?;
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(encoded)
        .ok()
        .and_then(|bytes| String::from_utf8(bytes).ok())
        .filter(|key| !key.is_empty())
        .ok_or(ApiError::Unauthorized)
}
