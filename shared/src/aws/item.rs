//! DynamoDB item plumbing shared by the adapters: attribute builders and readers, and a query
//! that follows `LastEvaluatedKey` to the end.

use std::collections::HashMap;

use aws_sdk_dynamodb::operation::query::builders::QueryFluentBuilder;
use aws_sdk_dynamodb::operation::update_item::builders::UpdateItemFluentBuilder;
use aws_sdk_dynamodb::types::AttributeValue;

use crate::store::StoreError;

pub(crate) type Item = HashMap<String, AttributeValue>;

pub(crate) fn s(v: impl Into<String>) -> AttributeValue {
    AttributeValue::S(v.into())
}

pub(crate) fn n(v: impl ToString) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

/// `request` with an `ADD` of each (attribute, amount), names and values as placeholders, and
/// the `ADD ...` clause of its update expression.
pub(crate) fn add_counters(
    mut request: UpdateItemFluentBuilder,
    entries: &[(String, u64)],
) -> (UpdateItemFluentBuilder, String) {
    let mut clauses = Vec::with_capacity(entries.len());
    for (i, (name, amount)) in entries.iter().enumerate() {
        clauses.push(format!("#n{i} :v{i}"));
        request = request
            .expression_attribute_names(format!("#n{i}"), name)
            .expression_attribute_values(format!(":v{i}"), n(amount));
    }
    (request, format!("ADD {}", clauses.join(", ")))
}

pub(crate) fn text<'a>(item: &'a Item, key: &str) -> Option<&'a str> {
    match item.get(key) {
        Some(AttributeValue::S(v)) => Some(v),
        _ => None,
    }
}

pub(crate) fn number(item: &Item, key: &str) -> Option<i64> {
    match item.get(key) {
        Some(AttributeValue::N(v)) => v.parse().ok(),
        _ => None,
    }
}

/// Every item the query matches, page after page.
pub(crate) async fn query_all(query: QueryFluentBuilder) -> Result<Vec<Item>, StoreError> {
    let mut items = Vec::new();
    let mut start = None;
    loop {
        let output = query
            .clone()
            .set_exclusive_start_key(start)
            .send()
            .await
            .map_err(|e| super::store_unavailable(&e))?;
        items.extend(output.items().iter().cloned());
        start = output.last_evaluated_key().cloned();
        if start.is_none() {
            return Ok(items);
        }
    }
}
