//! The requested recompute of every lead as one analytics-table item (pk `JOB#recompute`, sk
//! `current`): `jobId`, `requestedAt`, `nextShard`, `leads`. Progress only moves forward, and only
//! for the job that made it.

use async_trait::async_trait;
use aws_sdk_dynamodb::operation::delete_item::DeleteItemError;
use aws_sdk_dynamodb::operation::update_item::UpdateItemError;

use super::item::{n, number, s, text};
use super::leads::DynamoLeads;
use crate::event::format_utc;
use crate::scoring::{RecomputeJob, RecomputeJobs};
use crate::store::StoreError;

const JOB_PK: &str = "JOB#recompute";
const JOB_SK: &str = "current";

#[async_trait]
impl RecomputeJobs for DynamoLeads {
    async fn current_job(&self) -> Result<Option<RecomputeJob>, StoreError> {
        let output = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("pk", s(JOB_PK))
            .key("sk", s(JOB_SK))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| super::store_unavailable(&e))?;
        let Some(item) = output.item else {
            return Ok(None);
        };
        let requested_at = text(&item, "requestedAt")
            .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
            .map(|t| t.with_timezone(&chrono::Utc));
        match (text(&item, "jobId"), requested_at) {
            (Some(id), Some(requested_at)) => Ok(Some(RecomputeJob {
                id: id.to_owned(),
                requested_at,
                next_shard: u32::try_from(number(&item, "nextShard").unwrap_or(0)).unwrap_or(0),
                leads: u64::try_from(number(&item, "leads").unwrap_or(0)).unwrap_or(0),
            })),
            _ => Err(StoreError::Unavailable(
                "the recompute job item is unreadable".into(),
            )),
        }
    }

    async fn request_job(&self, job: &RecomputeJob) -> Result<(), StoreError> {
        self.client
            .put_item()
            .table_name(&self.table)
            .item("pk", s(JOB_PK))
            .item("sk", s(JOB_SK))
            .item("jobId", s(&job.id))
            .item("requestedAt", s(format_utc(job.requested_at)))
            .item("nextShard", n(job.next_shard))
            .item("leads", n(job.leads))
            .send()
            .await
            .map(|_| ())
            .map_err(|e| super::store_unavailable(&e))
    }

    async fn advance_job(&self, job_id: &str, next_shard: u32) -> Result<bool, StoreError> {
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("pk", s(JOB_PK))
            .key("sk", s(JOB_SK))
            .update_expression("SET nextShard = :next")
            .condition_expression("jobId = :id AND nextShard < :next")
            .expression_attribute_values(":id", s(job_id))
            .expression_attribute_values(":next", n(next_shard))
            .send()
            .await;
        match result {
            Ok(_) => Ok(true),
            Err(e) => match e.as_service_error() {
                Some(UpdateItemError::ConditionalCheckFailedException(_)) => Ok(false),
                _ => Err(super::store_unavailable(&e)),
            },
        }
    }

    async fn finish_job(&self, job_id: &str) -> Result<(), StoreError> {
        let result = self
            .client
            .delete_item()
            .table_name(&self.table)
            .key("pk", s(JOB_PK))
            .key("sk", s(JOB_SK))
            .condition_expression("jobId = :id")
            .expression_attribute_values(":id", s(job_id))
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(e) => match e.as_service_error() {
                // A new request replaced it: that one is still to do.
                Some(DeleteItemError::ConditionalCheckFailedException(_)) => Ok(()),
                _ => Err(super::store_unavailable(&e)),
            },
        }
    }
}
