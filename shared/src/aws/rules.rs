//! The scoring rules as one analytics-table item (`pk RULES`, `sk current`), versioned.

use async_trait::async_trait;
use aws_sdk_dynamodb::operation::put_item::PutItemError;
use aws_sdk_dynamodb::types::AttributeValue;

use crate::scoring::{RuleStore, RuleStoreError, ScoreRules, VersionedRules};
use crate::store::StoreError;

pub struct DynamoRules {
    client: aws_sdk_dynamodb::Client,
    table: String,
}

impl DynamoRules {
    pub fn new(config: &aws_config::SdkConfig, table: String) -> Self {
        Self {
            client: super::cost::dynamodb_client(config),
            table,
        }
    }
}

const PK: &str = "RULES";
const SK: &str = "current";

#[async_trait]
impl RuleStore for DynamoRules {
    async fn load(&self) -> Result<Option<VersionedRules>, StoreError> {
        let output = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("pk", AttributeValue::S(PK.into()))
            .key("sk", AttributeValue::S(SK.into()))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| super::store_unavailable(&e))?;
        let Some(item) = output.item else {
            return Ok(None);
        };
        let (Some(AttributeValue::S(json)), Some(AttributeValue::N(version))) =
            (item.get("rules"), item.get("version"))
        else {
            return Err(StoreError::Unavailable(
                "stored rules item is malformed".into(),
            ));
        };
        let rules: ScoreRules = serde_json::from_str(json)
            .map_err(|e| StoreError::Unavailable(format!("stored rules are invalid: {e}")))?;
        let version = version
            .parse()
            .map_err(|_| StoreError::Unavailable("stored rules version is malformed".into()))?;
        Ok(Some(VersionedRules { rules, version }))
    }

    async fn save(
        &self,
        rules: &ScoreRules,
        expected: u64,
    ) -> Result<VersionedRules, RuleStoreError> {
        let json =
            serde_json::to_string(rules).map_err(|e| StoreError::Unavailable(e.to_string()))?;
        let next = expected + 1;
        let mut request = self
            .client
            .put_item()
            .table_name(&self.table)
            .item("pk", AttributeValue::S(PK.into()))
            .item("sk", AttributeValue::S(SK.into()))
            .item("rules", AttributeValue::S(json))
            .item("version", AttributeValue::N(next.to_string()));
        request = if expected == 0 {
            request.condition_expression("attribute_not_exists(pk)")
        } else {
            request
                .condition_expression("version = :expected")
                .expression_attribute_values(":expected", AttributeValue::N(expected.to_string()))
        };
        match request.send().await {
            Ok(_) => Ok(VersionedRules {
                rules: rules.clone(),
                version: next,
            }),
            Err(e) => match e.as_service_error() {
                Some(PutItemError::ConditionalCheckFailedException(_)) => {
                    Err(RuleStoreError::Conflict)
                }
                _ => Err(RuleStoreError::Store(StoreError::Unavailable(
                    super::describe(&e),
                ))),
            },
        }
    }
}
