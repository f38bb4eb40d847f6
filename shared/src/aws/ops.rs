//! Queue depths and dependency checks against SQS and DynamoDB.

use async_trait::async_trait;
use aws_sdk_dynamodb::types::TableStatus;
use aws_sdk_sqs::types::QueueAttributeName;

use crate::ops::{Dependency, QueueDepth, QueueStats};
use crate::store::StoreError;

/// One SQS queue's approximate depth; it answers readiness checks with the same call.
pub struct SqsQueueStats {
    client: aws_sdk_sqs::Client,
    queue_url: String,
}

impl SqsQueueStats {
    pub fn new(config: &aws_config::SdkConfig, queue_url: String) -> Self {
        Self {
            client: aws_sdk_sqs::Client::new(config),
            queue_url,
        }
    }
}

#[async_trait]
impl QueueStats for SqsQueueStats {
    async fn depth(&self) -> Result<QueueDepth, StoreError> {
        let output = self
            .client
            .get_queue_attributes()
            .queue_url(&self.queue_url)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
            .send()
            .await
            .map_err(|e| super::store_unavailable(&e))?;
        let count = |name: QueueAttributeName| {
            output
                .attributes()
                .and_then(|a| a.get(&name))
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0)
        };
        Ok(QueueDepth {
            visible: count(QueueAttributeName::ApproximateNumberOfMessages),
            in_flight: count(QueueAttributeName::ApproximateNumberOfMessagesNotVisible),
        })
    }
}

#[async_trait]
impl Dependency for SqsQueueStats {
    async fn ping(&self) -> Result<(), StoreError> {
        self.depth().await.map(|_| ())
    }
}

/// A DynamoDB table answers and is usable (`DescribeTable`: active, or updating).
pub struct DynamoTableProbe {
    client: aws_sdk_dynamodb::Client,
    table: String,
}

impl DynamoTableProbe {
    pub fn new(config: &aws_config::SdkConfig, table: String) -> Self {
        Self {
            client: super::cost::dynamodb_client(config),
            table,
        }
    }
}

#[async_trait]
impl Dependency for DynamoTableProbe {
    async fn ping(&self) -> Result<(), StoreError> {
        let output = self
            .client
            .describe_table()
            .table_name(&self.table)
            .send()
            .await
            .map_err(|e| super::store_unavailable(&e))?;
        match output.table().and_then(|t| t.table_status()) {
            Some(TableStatus::Active | TableStatus::Updating) => Ok(()),
            other => Err(StoreError::Unavailable(format!("table status {other:?}"))),
        }
    }
}
