//! The live-updates adapters: open connections in a DynamoDB table (`connectionId`, with
//! `expiresAt` as its TTL attribute), and messages through API Gateway's `@connections`
//! management API.

use async_trait::async_trait;
use aws_sdk_apigatewaymanagement::error::SdkError;
use aws_sdk_apigatewaymanagement::operation::post_to_connection::PostToConnectionError;
use aws_sdk_apigatewaymanagement::primitives::Blob;
use chrono::{DateTime, Utc};

use super::item::{n, s, text, Item};
use crate::live::{Connection, Connections, SendError, SocketSender};
use crate::store::StoreError;

fn unavailable(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

pub struct DynamoConnections {
    client: aws_sdk_dynamodb::Client,
    table: String,
}

impl DynamoConnections {
    pub fn new(config: &aws_config::SdkConfig, table: String) -> Self {
        Self {
            client: aws_sdk_dynamodb::Client::new(config),
            table,
        }
    }
}

#[async_trait]
impl Connections for DynamoConnections {
    async fn add(&self, connection: &Connection) -> Result<(), StoreError> {
        let item = Item::from([
            ("connectionId".to_owned(), s(&connection.id)),
            (
                "connectedAt".to_owned(),
                n(connection.connected_at.timestamp_millis()),
            ),
            // DynamoDB's TTL takes epoch seconds.
            ("expiresAt".to_owned(), n(connection.expires_at.timestamp())),
        ]);
        self.client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .send()
            .await
            .map_err(|e| unavailable(aws_sdk_dynamodb::error::DisplayErrorContext(e)))?;
        Ok(())
    }

    async fn remove(&self, id: &str) -> Result<(), StoreError> {
        self.client
            .delete_item()
            .table_name(&self.table)
            .key("connectionId", s(id))
            .send()
            .await
            .map_err(|e| unavailable(aws_sdk_dynamodb::error::DisplayErrorContext(e)))?;
        Ok(())
    }

    async fn open(&self, limit: usize, now: DateTime<Utc>) -> Result<Vec<String>, StoreError> {
        // TTL deletes expired items only eventually, so they are filtered out here too. The
        // table holds consoles only (at most `MAX_CONNECTIONS`), so a scan is a page or two.
        let mut ids = Vec::new();
        let mut start = None;
        loop {
            let output = self
                .client
                .scan()
                .table_name(&self.table)
                .projection_expression("connectionId")
                .filter_expression("expiresAt > :now")
                .expression_attribute_values(":now", n(now.timestamp()))
                .set_exclusive_start_key(start)
                .send()
                .await
                .map_err(|e| unavailable(aws_sdk_dynamodb::error::DisplayErrorContext(e)))?;
            for item in output.items() {
                if let Some(id) = text(item, "connectionId") {
                    ids.push(id.to_owned());
                }
            }
            start = output.last_evaluated_key().cloned();
            if start.is_none() || ids.len() >= limit {
                break;
            }
        }
        ids.truncate(limit);
        Ok(ids)
    }
}

/// `PostToConnection` on the stage's management endpoint (`https://{api}.execute-api.{region}
/// .amazonaws.com/{stage}`).
pub struct ManagementApiSender {
    client: aws_sdk_apigatewaymanagement::Client,
}

impl ManagementApiSender {
    pub fn new(config: &aws_config::SdkConfig, endpoint: &str) -> Self {
        let config = aws_sdk_apigatewaymanagement::config::Builder::from(config)
            .endpoint_url(endpoint)
            .build();
        Self {
            client: aws_sdk_apigatewaymanagement::Client::from_conf(config),
        }
    }
}

#[async_trait]
impl SocketSender for ManagementApiSender {
    async fn send(&self, connection_id: &str, message: &[u8]) -> Result<(), SendError> {
        match self
            .client
            .post_to_connection()
            .connection_id(connection_id)
            .data(Blob::new(message))
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(SdkError::ServiceError(e))
                if matches!(e.err(), PostToConnectionError::GoneException(_)) =>
            {
                Err(SendError::Gone)
            }
            Err(e) => Err(SendError::Failed(
                aws_sdk_apigatewaymanagement::error::DisplayErrorContext(e).to_string(),
            )),
        }
    }
}
