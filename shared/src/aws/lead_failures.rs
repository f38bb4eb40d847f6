//! Leads the scorer could not write, one analytics-table item each: pk `LEADFAIL`, sk the lead
//! id, with `reason` and `failedAt`. One partition, read whole by a run (normally empty: one
//! read unit).

use async_trait::async_trait;

use super::batch::{delete, put, write_all};
use super::item::{s, text, Item};
use super::leads::DynamoLeads;
use crate::event::format_utc;
use crate::scoring::{LeadFailure, LeadFailures};
use crate::store::StoreError;

const FAIL_PK: &str = "LEADFAIL";

#[async_trait]
impl LeadFailures for DynamoLeads {
    async fn record_failures(&self, failures: &[LeadFailure]) -> Result<(), StoreError> {
        let requests = failures
            .iter()
            .map(|f| {
                put(Item::from([
                    ("pk".to_owned(), s(FAIL_PK)),
                    ("sk".to_owned(), s(&f.lead_id)),
                    ("reason".to_owned(), s(&f.reason)),
                    ("failedAt".to_owned(), s(format_utc(f.failed_at))),
                ]))
            })
            .collect::<Result<Vec<_>, _>>()?;
        write_all(&self.client, &self.table, requests, &self.consumed_milli).await
    }

    async fn failures(&self, limit: usize) -> Result<Vec<LeadFailure>, StoreError> {
        let mut failures = Vec::new();
        let mut start = None;
        loop {
            let output = self
                .client
                .query()
                .table_name(&self.table)
                .key_condition_expression("pk = :pk")
                .expression_attribute_values(":pk", s(FAIL_PK))
                .set_exclusive_start_key(start)
                .limit(i32::try_from(limit.min(1000)).unwrap_or(1000))
                .send()
                .await
                .map_err(|e| super::store_unavailable(&e))?;
            for item in output.items() {
                let failed_at = text(item, "failedAt")
                    .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
                    .map(|t| t.with_timezone(&chrono::Utc));
                if let (Some(lead_id), Some(failed_at)) = (text(item, "sk"), failed_at) {
                    failures.push(LeadFailure::new(
                        lead_id,
                        text(item, "reason").unwrap_or_default(),
                        failed_at,
                    ));
                }
            }
            start = output.last_evaluated_key;
            if start.is_none() || failures.len() >= limit {
                break;
            }
        }
        failures.truncate(limit);
        Ok(failures)
    }

    async fn clear_failures(&self, lead_ids: &[String]) -> Result<(), StoreError> {
        let requests = lead_ids
            .iter()
            .map(|id| delete(FAIL_PK, id))
            .collect::<Result<Vec<_>, _>>()?;
        write_all(&self.client, &self.table, requests, &self.consumed_milli).await
    }
}
