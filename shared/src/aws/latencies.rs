//! Request-latency histograms in the analytics table: one item per route and shard
//! (pk `COUNTERS#http`, sk `<route>#<shard>`), so each `ADD` touches an item of a few hundred
//! bytes (one write unit) and no route's item takes every environment's flushes.

use async_trait::async_trait;
use aws_sdk_dynamodb::types::AttributeValue;

use super::item::{add_counters, query_all, s};
use crate::request_latency::{LatencyStore, RouteHistogram, RouteLatencies};
use crate::store::StoreError;

const PK: &str = "COUNTERS#http";
const SHARDS: u8 = 4;

pub struct DynamoLatencies {
    client: aws_sdk_dynamodb::Client,
    table: String,
}

impl DynamoLatencies {
    pub fn new(config: &aws_config::SdkConfig, table: String) -> Self {
        Self {
            client: super::cost::dynamodb_client(config),
            table,
        }
    }
}

#[async_trait]
impl LatencyStore for DynamoLatencies {
    async fn add(&self, route: &str, histogram: &RouteHistogram) -> Result<(), StoreError> {
        let entries = histogram.entries();
        if entries.is_empty() {
            return Ok(());
        }
        let shard = fastrand::u8(0..SHARDS);
        let request = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("pk", s(PK))
            .key("sk", s(format!("{route}#{shard}")))
            .expression_attribute_names("#route", "route")
            .expression_attribute_values(":route", s(route));
        let (request, add) = add_counters(request, &entries);
        request
            .update_expression(format!("SET #route = :route {add}"))
            .send()
            .await
            .map(|_| ())
            .map_err(|e| super::store_unavailable(&e))
    }

    async fn totals(&self) -> Result<RouteLatencies, StoreError> {
        let items = query_all(
            self.client
                .query()
                .table_name(&self.table)
                .key_condition_expression("pk = :pk")
                .expression_attribute_values(":pk", s(PK)),
        )
        .await?;
        let mut totals = RouteLatencies::new();
        for item in &items {
            let Some(AttributeValue::S(route)) = item.get("route") else {
                continue;
            };
            let histogram: &mut RouteHistogram = totals.entry(route.clone()).or_default();
            for (name, value) in item {
                if let AttributeValue::N(v) = value {
                    histogram.add_attribute(name, v.parse().unwrap_or(0));
                }
            }
        }
        Ok(totals)
    }
}
