//! Tests of the harness itself against the real emulators, using the fixture template
//! `tests/fixtures/template-sample.yaml` (same shape as `template.yaml`).

use std::collections::HashMap;

use anyhow::{anyhow, ensure, Context, Result};
use aws_sdk_dynamodb::types::{
    AttributeValue, BillingMode, KeySchemaElement, KeyType, ProjectionType, StreamViewType,
};
use aws_sdk_sqs::types::{MessageSystemAttributeName, QueueAttributeName};
use tally_tests::template::Template;
use tally_tests::{fixture, Stack};

const FIXTURE: &str = "template-sample.yaml";

async fn provision(test: &str) -> Result<Stack> {
    Stack::provision_from(fixture(FIXTURE), test).await
}

/// `[(attribute, "HASH"|"RANGE")]` of a described key schema.
fn keys(schema: &[KeySchemaElement]) -> Vec<(String, String)> {
    schema
        .iter()
        .map(|k| {
            (
                k.attribute_name().to_string(),
                k.key_type().as_str().to_string(),
            )
        })
        .collect()
}

fn pairs(items: &[(&str, &str)]) -> Vec<(String, String)> {
    items
        .iter()
        .map(|(a, b)| ((*a).to_string(), (*b).to_string()))
        .collect()
}

#[test]
fn fixture_template_parses() -> Result<()> {
    let template = Template::load(fixture(FIXTURE))?;
    assert_eq!(
        template
            .parameters
            .get("MaxReceiveCount")
            .map(String::as_str),
        Some("5")
    );
    assert_eq!(
        template.parameters.get("Stage").map(String::as_str),
        Some("dev")
    );
    assert!(!template.parameters.contains_key("WebhookSecretArn"));

    let ids: Vec<&str> = template
        .tables
        .iter()
        .map(|t| t.logical_id.as_str())
        .collect();
    assert_eq!(ids, ["EventsTable", "AnalyticsTable"]);
    let events = template.table("EventsTable").context("EventsTable")?;
    assert_eq!(events.stream_view_type.as_deref(), Some("NEW_IMAGE"));
    let gsis: Vec<&str> = events
        .global_secondary_indexes
        .iter()
        .map(|i| i.index_name.as_str())
        .collect();
    assert_eq!(gsis, ["byLead", "byHour", "byFailure"]);

    let order: Vec<&str> = template
        .queues_in_creation_order()?
        .into_iter()
        .map(|q| q.logical_id.as_str())
        .collect();
    assert_eq!(order, ["DeadLetterQueue", "WorkQueue"]);
    let work = template.queue("WorkQueue").context("WorkQueue")?;
    assert_eq!(work.visibility_timeout, Some(360));
    let redrive = work.redrive.as_ref().context("WorkQueue redrive")?;
    assert_eq!(redrive.dead_letter_logical_id, "DeadLetterQueue");
    assert_eq!(redrive.max_receive_count, 5);
    Ok(())
}

#[test]
fn template_errors_are_explicit() {
    let bad_target = r#"
Resources:
  Work:
    Type: AWS::SQS::Queue
    Properties:
      RedrivePolicy:
        deadLetterTargetArn: !GetAtt Missing.Arn
        maxReceiveCount: 3
"#;
    let err = Template::parse(bad_target).err().map(|e| format!("{e:#}"));
    assert!(
        err.as_deref().is_some_and(|e| e.contains("Missing")),
        "{err:?}"
    );

    let no_default = r#"
Parameters:
  Count:
    Type: Number
Resources:
  Dlq:
    Type: AWS::SQS::Queue
  Work:
    Type: AWS::SQS::Queue
    Properties:
      RedrivePolicy:
        deadLetterTargetArn: !GetAtt [Dlq, Arn]
        maxReceiveCount: {Ref: Count}
"#;
    let err = Template::parse(no_default).err().map(|e| format!("{e:#}"));
    assert!(
        err.as_deref().is_some_and(|e| e.contains("Count")),
        "{err:?}"
    );
}

#[tokio::test]
async fn tables_match_the_template() -> Result<()> {
    let stack = provision("tables_match_the_template").await?;

    let events_name = stack.table("EventsTable")?;
    assert!(events_name.starts_with(&stack.prefix), "{events_name}");
    let described = stack
        .dynamodb
        .describe_table()
        .table_name(events_name)
        .send()
        .await?;
    let events = described.table().context("EventsTable description")?;
    assert_eq!(keys(events.key_schema()), pairs(&[("eventId", "HASH")]));
    assert_eq!(
        events.billing_mode_summary().and_then(|b| b.billing_mode()),
        Some(&BillingMode::PayPerRequest)
    );
    let stream = events
        .stream_specification()
        .context("EventsTable has no stream")?;
    assert!(stream.stream_enabled());
    assert_eq!(stream.stream_view_type(), Some(&StreamViewType::NewImage));
    assert!(events.latest_stream_arn().is_some());

    let gsis: HashMap<&str, _> = events
        .global_secondary_indexes()
        .iter()
        .map(|g| (g.index_name().unwrap_or_default(), g))
        .collect();
    let expected = [
        ("byLead", "leadId", "leadSort"),
        ("byHour", "hour", "eventSort"),
        ("byFailure", "failureStatus", "failedAt"),
    ];
    assert_eq!(gsis.len(), expected.len(), "{:?}", gsis.keys());
    for (index, hash, range) in expected {
        let gsi = gsis.get(index).with_context(|| format!("GSI {index}"))?;
        assert_eq!(
            keys(gsi.key_schema()),
            pairs(&[(hash, "HASH"), (range, "RANGE")]),
            "{index}"
        );
        assert_eq!(
            gsi.projection().and_then(|p| p.projection_type()),
            Some(&ProjectionType::All),
            "{index}"
        );
    }

    let analytics = stack
        .dynamodb
        .describe_table()
        .table_name(stack.table("AnalyticsTable")?)
        .send()
        .await?;
    let analytics = analytics.table().context("AnalyticsTable description")?;
    assert_eq!(
        keys(analytics.key_schema()),
        pairs(&[("pk", "HASH"), ("sk", "RANGE")])
    );
    assert!(analytics.global_secondary_indexes().is_empty());
    assert!(analytics
        .stream_specification()
        .is_none_or(|s| !s.stream_enabled()));
    Ok(())
}

#[tokio::test]
async fn work_queue_redrives_to_the_dead_letter_queue() -> Result<()> {
    let stack = provision("work_queue_redrives").await?;
    let work = stack.queue("WorkQueue")?;
    let dlq = stack.queue("DeadLetterQueue")?;

    assert_eq!(work.visibility_timeout, Some(360));
    assert_eq!(work.max_receive_count, Some(5));
    assert_eq!(
        work.dead_letter_logical_id.as_deref(),
        Some("DeadLetterQueue")
    );
    assert_eq!(dlq.dead_letter_logical_id, None);
    assert!(dlq.arn.ends_with(&format!(":{}", dlq.name)), "{}", dlq.arn);
    assert_eq!(
        stack.parameters.get("MaxReceiveCount").map(String::as_str),
        Some("5")
    );

    let attributes = stack
        .sqs
        .get_queue_attributes()
        .queue_url(&work.url)
        .attribute_names(QueueAttributeName::All)
        .send()
        .await?;
    let attributes = attributes.attributes().context("no attributes")?;
    assert_eq!(
        attributes
            .get(&QueueAttributeName::VisibilityTimeout)
            .map(String::as_str),
        Some("360")
    );
    assert_eq!(
        attributes
            .get(&QueueAttributeName::MessageRetentionPeriod)
            .map(String::as_str),
        Some("345600")
    );
    let policy = attributes
        .get(&QueueAttributeName::RedrivePolicy)
        .context("WorkQueue has no RedrivePolicy")?;
    let policy: serde_json::Value = serde_json::from_str(policy)?;
    assert_eq!(
        policy["deadLetterTargetArn"].as_str(),
        Some(dlq.arn.as_str())
    );
    // AWS accepts (and may echo) the count as a number or a string.
    let count = match &policy["maxReceiveCount"] {
        serde_json::Value::Number(n) => n.as_i64(),
        serde_json::Value::String(s) => s.parse().ok(),
        _ => None,
    };
    assert_eq!(count, Some(5), "{policy}");
    Ok(())
}

#[tokio::test]
async fn message_received_max_times_moves_to_the_dead_letter_queue() -> Result<()> {
    let stack = provision("message_to_dlq").await?;
    let work = stack.queue("WorkQueue")?;
    let dlq = stack.queue("DeadLetterQueue")?;
    let max = work.max_receive_count.context("no maxReceiveCount")?;
    assert_eq!(max, 5);

    let body = format!("poison-{}", stack.prefix);
    stack
        .sqs
        .send_message()
        .queue_url(&work.url)
        .message_body(&body)
        .send()
        .await?;

    // Receive without deleting; VisibilityTimeout=0 makes it visible again at once.
    for expected in 1..=max {
        let received = stack
            .sqs
            .receive_message()
            .queue_url(&work.url)
            .visibility_timeout(0)
            .max_number_of_messages(1)
            .message_system_attribute_names(MessageSystemAttributeName::ApproximateReceiveCount)
            .send()
            .await?;
        let messages = received.messages();
        ensure!(
            messages.len() == 1,
            "receive #{expected}: expected the message, got {messages:?}"
        );
        assert_eq!(messages[0].body(), Some(body.as_str()));
        let count = messages[0]
            .attributes()
            .and_then(|a| a.get(&MessageSystemAttributeName::ApproximateReceiveCount))
            .map(String::as_str);
        assert_eq!(count, Some(expected.to_string().as_str()));
    }

    // The next receive finds it over the limit: moved to the DLQ, not delivered.
    let after = stack
        .sqs
        .receive_message()
        .queue_url(&work.url)
        .visibility_timeout(0)
        .send()
        .await?;
    assert!(
        after.messages().is_empty(),
        "still delivered from the work queue: {:?}",
        after.messages()
    );

    let dead = stack
        .sqs
        .receive_message()
        .queue_url(&dlq.url)
        .wait_time_seconds(2)
        .send()
        .await?;
    let bodies: Vec<Option<&str>> = dead.messages().iter().map(|m| m.body()).collect();
    assert_eq!(bodies, [Some(body.as_str())]);
    Ok(())
}

#[tokio::test]
async fn conditional_put_fails_the_second_time() -> Result<()> {
    let stack = provision("conditional_put").await?;
    let table = stack.table("EventsTable")?;
    let put = || {
        stack
            .dynamodb
            .put_item()
            .table_name(table)
            .item("eventId", AttributeValue::S("evt-1".into()))
            .item("leadId", AttributeValue::S("lead-1".into()))
            .item(
                "leadSort",
                AttributeValue::S("2024-01-01T00:00:00Z#evt-1".into()),
            )
            .condition_expression("attribute_not_exists(eventId)")
            .send()
    };
    put().await.context("first conditional put")?;
    let second = put().await;
    let err = second
        .err()
        .ok_or_else(|| anyhow!("second conditional put succeeded"))?;
    assert!(
        err.as_service_error()
            .is_some_and(|e| e.is_conditional_check_failed_exception()),
        "{}",
        aws_sdk_dynamodb::error::DisplayErrorContext(&err)
    );

    // The GSI sees the item too (DynamoDB Local maintains indexes synchronously).
    let by_lead = stack
        .dynamodb
        .query()
        .table_name(table)
        .index_name("byLead")
        .key_condition_expression("leadId = :lead")
        .expression_attribute_values(":lead", AttributeValue::S("lead-1".into()))
        .send()
        .await?;
    assert_eq!(by_lead.count(), 1);
    Ok(())
}

#[tokio::test]
async fn provisions_are_isolated() -> Result<()> {
    let (a, b) = tokio::try_join!(provision("isolated"), provision("isolated"))?;
    assert_ne!(a.prefix, b.prefix);
    for id in ["EventsTable", "AnalyticsTable"] {
        assert_ne!(a.table(id)?, b.table(id)?);
    }
    for id in ["WorkQueue", "DeadLetterQueue"] {
        assert_ne!(a.queue(id)?.url, b.queue(id)?.url);
    }
    assert!(a.table("NoSuchTable").is_err());
    assert!(a.queue("NoSuchQueue").is_err());
    Ok(())
}

/// Checks every table and queue of `template` against what DescribeTable/GetQueueAttributes
/// report for `stack`.
async fn assert_stack_matches(stack: &Stack, template: &Template) -> Result<()> {
    for spec in &template.tables {
        let described = stack
            .dynamodb
            .describe_table()
            .table_name(stack.table(&spec.logical_id)?)
            .send()
            .await?;
        let table = described.table().context("no table description")?;
        let expected: Vec<(String, String)> = spec
            .key_schema
            .iter()
            .map(|k| (k.attribute_name.clone(), k.key_type.clone()))
            .collect();
        assert_eq!(keys(table.key_schema()), expected, "{}", spec.logical_id);
        let mut indexes: Vec<(String, Vec<(String, String)>)> = table
            .global_secondary_indexes()
            .iter()
            .map(|g| {
                (
                    g.index_name().unwrap_or_default().to_string(),
                    keys(g.key_schema()),
                )
            })
            .collect();
        indexes.sort();
        let mut expected: Vec<(String, Vec<(String, String)>)> = spec
            .global_secondary_indexes
            .iter()
            .map(|i| {
                let keys = i
                    .key_schema
                    .iter()
                    .map(|k| (k.attribute_name.clone(), k.key_type.clone()))
                    .collect();
                (i.index_name.clone(), keys)
            })
            .collect();
        expected.sort();
        assert_eq!(indexes, expected, "{} GSIs", spec.logical_id);
        let stream = table
            .stream_specification()
            .filter(|s| s.stream_enabled())
            .and_then(|s| s.stream_view_type())
            .map(|v| v.as_str().to_string());
        assert_eq!(stream, spec.stream_view_type, "{} stream", spec.logical_id);
    }
    for spec in &template.queues {
        let queue = stack.queue(&spec.logical_id)?;
        let attributes = stack
            .sqs
            .get_queue_attributes()
            .queue_url(&queue.url)
            .attribute_names(QueueAttributeName::All)
            .send()
            .await?;
        let attributes = attributes.attributes().context("no attributes")?;
        if let Some(timeout) = spec.visibility_timeout {
            assert_eq!(
                attributes.get(&QueueAttributeName::VisibilityTimeout),
                Some(&timeout.to_string()),
                "{}",
                spec.logical_id
            );
        }
        match &spec.redrive {
            Some(redrive) => {
                let policy = attributes
                    .get(&QueueAttributeName::RedrivePolicy)
                    .with_context(|| format!("{} has no RedrivePolicy", spec.logical_id))?;
                let policy: serde_json::Value = serde_json::from_str(policy)?;
                let target = stack.queue(&redrive.dead_letter_logical_id)?;
                assert_eq!(
                    policy["deadLetterTargetArn"].as_str(),
                    Some(target.arn.as_str())
                );
                assert_eq!(
                    policy["maxReceiveCount"].to_string().trim_matches('"'),
                    redrive.max_receive_count.to_string()
                );
            }
            None => assert!(!attributes.contains_key(&QueueAttributeName::RedrivePolicy)),
        }
    }
    Ok(())
}

#[tokio::test]
async fn fixture_stack_matches_the_fixture_template() -> Result<()> {
    let stack = provision("fixture_stack_matches").await?;
    assert_stack_matches(&stack, &Template::load(fixture(FIXTURE))?).await
}

/// Provisions the real `template.yaml` once it exists, so a template the harness cannot read
/// (or reads wrongly) fails here first.
#[tokio::test]
async fn real_template_provisions() -> Result<()> {
    let path = tally_tests::repo_root().join("template.yaml");
    if !path.is_file() {
        eprintln!("skipped: {} does not exist yet", path.display());
        return Ok(());
    }
    let template = Template::load(&path)?;
    let stack = Stack::provision("real_template").await?;
    for id in ["EventsTable", "AnalyticsTable"] {
        stack.table(id)?;
    }
    for id in ["WorkQueue", "DeadLetterQueue"] {
        stack.queue(id)?;
    }
    let work = stack.queue("WorkQueue")?;
    assert_eq!(
        work.dead_letter_logical_id.as_deref(),
        Some("DeadLetterQueue")
    );
    assert_eq!(
        work.max_receive_count.map(|n| n.to_string()).as_deref(),
        stack.parameters.get("MaxReceiveCount").map(String::as_str)
    );
    assert_stack_matches(&stack, &template).await
}

#[test]
fn key_type_strings_round_trip() {
    // Guards the string-based template model against SDK enum renames.
    assert_eq!(KeyType::from("HASH"), KeyType::Hash);
    assert_eq!(KeyType::from("RANGE"), KeyType::Range);
}
