//! Tests of the harness itself against the real emulators, using the fixture template
//! `tests/fixtures/template-sample.yaml` (same shape as `template.yaml`).

use std::collections::HashMap;

use anyhow::{anyhow, ensure, Context, Result};
use aws_sdk_dynamodb::types::{
    AttributeValue, BillingMode, KeySchemaElement, KeyType, ProjectionType, StreamViewType,
};
use aws_sdk_firehose::primitives::Blob;
use aws_sdk_firehose::types::{
    CompressionFormat, DeliveryStreamDescription, DeliveryStreamStatus, DeliveryStreamType, Record,
};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{ExpirationStatus, ServerSideEncryption, TransitionStorageClass};
use aws_sdk_sqs::types::{MessageSystemAttributeName, QueueAttributeName};
use tally_local::stack::bucket_name;
use tally_tests::template::{LifecycleRuleSpec, PublicAccessBlockSpec, Template, TransitionSpec};
use tally_tests::{fixture, Stack};

const FIXTURE: &str = "template-sample.yaml";
const ARCHIVE_PREFIX: &str = "events/dt=!{timestamp:yyyy-MM-dd}/hour=!{timestamp:HH}/";

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
    assert_eq!(gsis, ["byLead", "byHourShard", "byFailure"]);

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

    let bucket_ids: Vec<&str> = template
        .buckets
        .iter()
        .map(|b| b.logical_id.as_str())
        .collect();
    assert_eq!(bucket_ids, ["ArchiveBucket"]);
    let bucket = template.bucket("ArchiveBucket").context("ArchiveBucket")?;
    let encryption = bucket.encryption.as_ref().context("no encryption")?;
    assert_eq!(encryption.sse_algorithm, "AES256");
    assert_eq!(encryption.kms_master_key_id, None);
    assert_eq!(encryption.bucket_key_enabled, Some(true));
    assert_eq!(
        bucket.public_access_block,
        Some(PublicAccessBlockSpec {
            block_public_acls: true,
            block_public_policy: true,
            ignore_public_acls: true,
            restrict_public_buckets: true,
        })
    );
    assert_eq!(bucket.versioning, None);
    assert_eq!(
        bucket.lifecycle_rules,
        [LifecycleRuleSpec {
            id: Some("archive-tiering".into()),
            enabled: true,
            prefix: Some("events/".into()),
            expiration_in_days: Some(400),
            noncurrent_version_expiration_in_days: None,
            abort_incomplete_multipart_upload_days: Some(7),
            transitions: vec![TransitionSpec {
                storage_class: "STANDARD_IA".into(),
                transition_in_days: 30,
            }],
        }]
    );

    let stream = template
        .delivery_stream("ArchiveStream")
        .context("ArchiveStream")?;
    assert_eq!(template.delivery_streams.len(), 1);
    assert_eq!(stream.bucket_logical_id, "ArchiveBucket");
    assert!(stream.extended);
    assert_eq!(stream.prefix.as_deref(), Some(ARCHIVE_PREFIX));
    assert_eq!(
        stream.error_output_prefix.as_deref(),
        Some("errors/!{firehose:error-output-type}/dt=!{timestamp:yyyy-MM-dd}/")
    );
    assert_eq!(stream.compression_format.as_deref(), Some("GZIP"));
    assert_eq!(stream.buffering_interval_seconds, Some(60));
    assert_eq!(stream.buffering_size_mb, Some(5));
    // `!GetAtt ArchiveStreamRole.Arn` cannot be resolved locally; moto ignores roles anyway.
    assert_eq!(stream.role_arn, None);
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

    let missing_bucket = r#"
Resources:
  Stream:
    Type: AWS::KinesisFirehose::DeliveryStream
    Properties:
      ExtendedS3DestinationConfiguration:
        BucketARN: !GetAtt NoBucket.Arn
        RoleARN: arn:aws:iam::123456789012:role/r
"#;
    let err = Template::parse(missing_bucket)
        .err()
        .map(|e| format!("{e:#}"));
    assert!(
        err.as_deref().is_some_and(|e| e.contains("NoBucket")),
        "{err:?}"
    );

    let kinesis_source = r#"
Resources:
  Bucket:
    Type: AWS::S3::Bucket
  Stream:
    Type: AWS::KinesisFirehose::DeliveryStream
    Properties:
      DeliveryStreamType: KinesisStreamAsSource
      S3DestinationConfiguration:
        BucketARN: !GetAtt [Bucket, Arn]
        RoleARN: arn:aws:iam::123456789012:role/r
"#;
    let err = Template::parse(kinesis_source)
        .err()
        .map(|e| format!("{e:#}"));
    assert!(
        err.as_deref()
            .is_some_and(|e| e.contains("KinesisStreamAsSource")),
        "{err:?}"
    );

    let plain_s3 = r#"
Resources:
  Bucket:
    Type: AWS::S3::Bucket
  Stream:
    Type: AWS::KinesisFirehose::DeliveryStream
    Properties:
      S3DestinationConfiguration:
        BucketARN: {"Fn::GetAtt": [Bucket, Arn]}
        RoleARN: arn:aws:iam::123456789012:role/r
        Prefix: !Sub "raw/${AWS::Region}/"
"#;
    let parsed = Template::parse(plain_s3).map_err(|e| format!("{e:#}"));
    let stream = parsed
        .as_ref()
        .ok()
        .and_then(|t| t.delivery_stream("Stream"));
    assert!(
        stream.is_some_and(|s| !s.extended
            && s.bucket_logical_id == "Bucket"
            && s.prefix.as_deref() == Some("raw/us-east-1/")
            && s.role_arn.as_deref() == Some("arn:aws:iam::123456789012:role/r")),
        "{parsed:?}"
    );
}

#[test]
fn bucket_names_follow_the_s3_rules() {
    assert_eq!(
        bucket_name("Tally_Test-1a2b3c4d", "ArchiveBucket"),
        "tally-test-1a2b3c4d-archivebucket"
    );
    assert_eq!(bucket_name("--x", "_"), "x00");
    let long_a = bucket_name(&"p".repeat(41), "AVeryLongLogicalIdForTheArchiveBucketA");
    let long_b = bucket_name(&"p".repeat(41), "AVeryLongLogicalIdForTheArchiveBucketB");
    for name in [&long_a, &long_b] {
        assert!(name.len() <= 63, "{name}");
        assert!(
            name.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'),
            "{name}"
        );
        assert!(!name.starts_with('-') && !name.ends_with('-'), "{name}");
    }
    assert_ne!(long_a, long_b);
    // Stable: the same inputs always give the same name (a `--state-dir` restart finds it).
    assert_eq!(
        long_a,
        bucket_name(&"p".repeat(41), "AVeryLongLogicalIdForTheArchiveBucketA")
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
    // Each index projects only what its readers take.
    let expected: [(&str, &str, &str, &[&str]); 3] = [
        ("byLead", "leadId", "leadSort", &["event"]),
        (
            "byHourShard",
            "hourShard",
            "eventSort",
            &["event", "processedAt"],
        ),
        (
            "byFailure",
            "failureStatus",
            "failedAt",
            &["attempts", "failureReason", "status", "type"],
        ),
    ];
    assert_eq!(gsis.len(), expected.len(), "{:?}", gsis.keys());
    for (index, hash, range, projected) in expected {
        let gsi = gsis.get(index).with_context(|| format!("GSI {index}"))?;
        assert_eq!(
            keys(gsi.key_schema()),
            pairs(&[(hash, "HASH"), (range, "RANGE")]),
            "{index}"
        );
        let projection = gsi.projection().context("projection")?;
        assert_eq!(
            projection.projection_type(),
            Some(&ProjectionType::Include),
            "{index}"
        );
        let mut attributes: Vec<&str> = projection
            .non_key_attributes()
            .iter()
            .map(String::as_str)
            .collect();
        attributes.sort_unstable();
        assert_eq!(attributes, projected, "{index}");
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
    assert_ne!(a.bucket("ArchiveBucket")?, b.bucket("ArchiveBucket")?);
    assert_ne!(
        a.delivery_stream("ArchiveStream")?.arn,
        b.delivery_stream("ArchiveStream")?.arn
    );
    assert!(a.table("NoSuchTable").is_err());
    assert!(a.queue("NoSuchQueue").is_err());
    assert!(a.bucket("NoSuchBucket").is_err());
    assert!(a.delivery_stream("NoSuchStream").is_err());
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
    assert_eq!(stack.buckets.len(), template.buckets.len());
    for spec in &template.buckets {
        let bucket = stack.bucket(&spec.logical_id)?;
        assert_eq!(bucket.arn, format!("arn:aws:s3:::{}", bucket.name));
        stack
            .s3
            .head_bucket()
            .bucket(&bucket.name)
            .send()
            .await
            .with_context(|| format!("HeadBucket {}", bucket.name))?;
    }
    assert_eq!(
        stack.delivery_streams.len(),
        template.delivery_streams.len()
    );
    for spec in &template.delivery_streams {
        let info = stack.delivery_stream(&spec.logical_id)?;
        let description = describe_stream(stack, &info.name).await?;
        assert_eq!(
            description.delivery_stream_status(),
            &DeliveryStreamStatus::Active
        );
        assert_eq!(description.delivery_stream_arn(), info.arn);
        let destination = description
            .destinations()
            .first()
            .and_then(|d| d.extended_s3_destination_description())
            .with_context(|| format!("{} has no ExtendedS3 destination", spec.logical_id))?;
        assert_eq!(
            destination.bucket_arn(),
            stack.bucket(&spec.bucket_logical_id)?.arn
        );
        assert_eq!(destination.prefix(), spec.prefix.as_deref());
    }
    Ok(())
}

/// SDK errors print as "service error"; this keeps the code and message.
fn aws<E, R>(err: aws_sdk_s3::error::SdkError<E, R>) -> anyhow::Error
where
    E: std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug + Send + Sync + 'static,
{
    let detail = aws_sdk_s3::error::DisplayErrorContext(&err).to_string();
    anyhow!(err).context(detail)
}

async fn describe_stream(stack: &Stack, name: &str) -> Result<DeliveryStreamDescription> {
    stack
        .firehose
        .describe_delivery_stream()
        .delivery_stream_name(name)
        .send()
        .await
        .map_err(aws)
        .with_context(|| format!("DescribeDeliveryStream {name}"))?
        .delivery_stream_description
        .context("no DeliveryStreamDescription")
}

#[tokio::test]
async fn archive_bucket_matches_the_template() -> Result<()> {
    let stack = provision("archive_bucket").await?;
    let bucket = stack.bucket("ArchiveBucket")?;
    assert!(
        bucket.name.starts_with(&stack.prefix.to_ascii_lowercase()),
        "{}",
        bucket.name
    );
    assert!(bucket.name.ends_with("-archivebucket"), "{}", bucket.name);
    stack
        .s3
        .head_bucket()
        .bucket(&bucket.name)
        .send()
        .await
        .map_err(aws)?;

    let encryption = stack
        .s3
        .get_bucket_encryption()
        .bucket(&bucket.name)
        .send()
        .await
        .map_err(aws)?;
    let rules = encryption
        .server_side_encryption_configuration()
        .map(|c| c.rules())
        .unwrap_or_default();
    assert_eq!(rules.len(), 1, "{rules:?}");
    assert_eq!(
        rules[0]
            .apply_server_side_encryption_by_default()
            .map(|d| d.sse_algorithm()),
        Some(&ServerSideEncryption::Aes256)
    );
    assert_eq!(rules[0].bucket_key_enabled(), Some(true));

    let block = stack
        .s3
        .get_public_access_block()
        .bucket(&bucket.name)
        .send()
        .await
        .map_err(aws)?;
    let block = block
        .public_access_block_configuration()
        .context("no PublicAccessBlockConfiguration")?;
    assert_eq!(
        (
            block.block_public_acls(),
            block.block_public_policy(),
            block.ignore_public_acls(),
            block.restrict_public_buckets()
        ),
        (Some(true), Some(true), Some(true), Some(true))
    );

    let lifecycle = stack
        .s3
        .get_bucket_lifecycle_configuration()
        .bucket(&bucket.name)
        .send()
        .await
        .map_err(aws)?;
    let rules = lifecycle.rules();
    assert_eq!(rules.len(), 1, "{rules:?}");
    let rule = &rules[0];
    assert_eq!(rule.id(), Some("archive-tiering"));
    assert_eq!(rule.status(), &ExpirationStatus::Enabled);
    assert_eq!(
        rule.filter().and_then(|f| f.prefix()),
        Some("events/"),
        "{rule:?}"
    );
    assert_eq!(rule.expiration().and_then(|e| e.days()), Some(400));
    let transitions: Vec<(Option<i32>, Option<&TransitionStorageClass>)> = rule
        .transitions()
        .iter()
        .map(|t| (t.days(), t.storage_class()))
        .collect();
    assert_eq!(
        transitions,
        [(Some(30), Some(&TransitionStorageClass::StandardIa))]
    );
    assert_eq!(
        rule.abort_incomplete_multipart_upload()
            .and_then(|a| a.days_after_initiation()),
        Some(7)
    );

    // No VersioningConfiguration in the template, so versioning is never set. (GetBucketVersioning
    // cannot check that here: for a never-versioned bucket moto answers an empty
    // `<GetBucketVersioningResponse/>` root, which the Rust SDK fails to parse.)
    Ok(())
}

/// Versioning, a noncurrent-version rule and KMS encryption, from an inline template.
#[tokio::test]
async fn versioned_bucket_from_an_inline_template() -> Result<()> {
    let template = Template::parse(
        r#"
Resources:
  Versioned_Bucket:
    Type: AWS::S3::Bucket
    Properties:
      VersioningConfiguration:
        Status: Enabled
      BucketEncryption:
        ServerSideEncryptionConfiguration:
          - ServerSideEncryptionByDefault:
              SSEAlgorithm: aws:kms
              KMSMasterKeyID: alias/tally-local
      LifecycleConfiguration:
        Rules:
          - Status: Enabled
            NoncurrentVersionExpiration:
              NoncurrentDays: 30
"#,
    )?;
    let fixture_stack = provision("versioned_bucket").await?;
    let stack = Stack::create(
        &template,
        &fixture_stack.dynamodb_endpoint,
        &fixture_stack.moto_endpoint,
        "versioned_bucket",
    )
    .await?;
    let bucket = stack.bucket("Versioned_Bucket")?;
    assert!(
        bucket.name.ends_with("-versioned-bucket"),
        "{}",
        bucket.name
    );

    // moto answers GetBucketVersioning with a `<GetBucketVersioningResponse>` root instead of
    // `<VersioningConfiguration>`, which the Rust SDK cannot parse; so prove versioning by its
    // effect: two puts of one key keep two versions.
    for body in ["v1", "v2"] {
        stack
            .s3
            .put_object()
            .bucket(&bucket.name)
            .key("k")
            .body(ByteStream::from_static(body.as_bytes()))
            .send()
            .await
            .map_err(aws)?;
    }
    let versions = stack
        .s3
        .list_object_versions()
        .bucket(&bucket.name)
        .send()
        .await
        .map_err(aws)?;
    let ids: Vec<Option<&str>> = versions.versions().iter().map(|v| v.version_id()).collect();
    assert_eq!(ids.len(), 2, "{versions:?}");
    assert!(
        ids.iter().all(|id| id.is_some_and(|id| id != "null")),
        "{ids:?}"
    );

    let encryption = stack
        .s3
        .get_bucket_encryption()
        .bucket(&bucket.name)
        .send()
        .await
        .map_err(aws)?;
    let default = encryption
        .server_side_encryption_configuration()
        .and_then(|c| c.rules().first())
        .and_then(|r| r.apply_server_side_encryption_by_default())
        .context("no default encryption")?;
    assert_eq!(default.sse_algorithm(), &ServerSideEncryption::AwsKms);
    assert_eq!(default.kms_master_key_id(), Some("alias/tally-local"));

    let lifecycle = stack
        .s3
        .get_bucket_lifecycle_configuration()
        .bucket(&bucket.name)
        .send()
        .await
        .map_err(aws)?;
    let days: Vec<Option<i32>> = lifecycle
        .rules()
        .iter()
        .map(|r| {
            r.noncurrent_version_expiration()
                .and_then(|n| n.noncurrent_days())
        })
        .collect();
    assert_eq!(days, [Some(30)]);
    Ok(())
}

/// What moto's Firehose does with a `PutRecordBatch` to an S3 destination (moto 5.x; AWS differs):
/// * every put call writes exactly one object at once: buffering hints are ignored;
/// * the object is the records' bytes concatenated as sent: no newline is added between
///   records (producers write NDJSON themselves) and `CompressionFormat: GZIP` is ignored;
/// * the key is `<Prefix, verbatim><YYYY/MM/DD/HH of now, UTC>/<stream>-<version>-<date time>-<uuid>`:
///   `!{timestamp:...}` expressions stay in the key unevaluated, and the `YYYY/MM/DD/HH/` that AWS
///   only adds when there is no custom prefix is added anyway;
/// * `ErrorOutputPrefix` is stored but never used (nothing fails).
#[tokio::test]
async fn archive_stream_delivers_ndjson_to_the_bucket() -> Result<()> {
    let stack = provision("archive_stream").await?;
    let bucket = stack.bucket("ArchiveBucket")?;
    let stream = stack.delivery_stream("ArchiveStream")?;
    assert_eq!(stream.bucket_logical_id, "ArchiveBucket");
    assert_eq!(stream.prefix.as_deref(), Some(ARCHIVE_PREFIX));
    assert!(stream
        .arn
        .ends_with(&format!(":deliverystream/{}", stream.name)));

    let description = describe_stream(&stack, &stream.name).await?;
    assert_eq!(
        description.delivery_stream_status(),
        &DeliveryStreamStatus::Active
    );
    assert_eq!(
        description.delivery_stream_type(),
        &DeliveryStreamType::DirectPut
    );
    let destination = description
        .destinations()
        .first()
        .and_then(|d| d.extended_s3_destination_description())
        .context("no ExtendedS3 destination")?;
    assert_eq!(destination.bucket_arn(), bucket.arn);
    assert_eq!(destination.prefix(), Some(ARCHIVE_PREFIX));
    assert_eq!(
        destination.error_output_prefix(),
        Some("errors/!{firehose:error-output-type}/dt=!{timestamp:yyyy-MM-dd}/")
    );
    assert_eq!(destination.compression_format(), &CompressionFormat::Gzip);
    let hints = destination.buffering_hints().context("no BufferingHints")?;
    assert_eq!(
        (hints.interval_in_seconds(), hints.size_in_mbs()),
        (Some(60), Some(5))
    );

    let lines = [
        r#"{"eventId":"e1","type":"PAGE_VIEW"}"#,
        r#"{"eventId":"e2","type":"SIGN_UP"}"#,
        r#"{"eventId":"e3","type":"PURCHASE","amount":"12.50"}"#,
    ];
    let mut batch = stack
        .firehose
        .put_record_batch()
        .delivery_stream_name(&stream.name);
    for line in lines {
        batch = batch.records(
            Record::builder()
                .data(Blob::new(format!("{line}\n")))
                .build()?,
        );
    }
    let put = batch.send().await.map_err(aws).context("PutRecordBatch")?;
    assert_eq!(put.failed_put_count(), 0);
    assert_eq!(put.request_responses().len(), 3);

    let objects = list_objects(&stack, &bucket.name).await?;
    assert_eq!(objects.len(), 1, "one object per put call: {objects:?}");
    let key = &objects[0];
    let after_prefix = key
        .strip_prefix(ARCHIVE_PREFIX)
        .with_context(|| format!("key {key} does not start with the verbatim prefix"))?;
    let (date_path, object) = after_prefix
        .rsplit_once('/')
        .with_context(|| format!("key {key}: no YYYY/MM/DD/HH/ part"))?;
    assert_eq!(
        date_path.split('/').map(str::len).collect::<Vec<_>>(),
        [4, 2, 2, 2],
        "{key}"
    );
    assert!(object.starts_with(&format!("{}-1-", stream.name)), "{key}");

    let body = get_object(&stack, &bucket.name, key).await?;
    assert_ne!(body.get(..2), Some(&[0x1f, 0x8b][..]), "moto gzipped it");
    let text = String::from_utf8(body)?;
    assert_eq!(text, format!("{}\n", lines.join("\n")));

    // Records without their own newline run together: moto adds none.
    stack
        .firehose
        .put_record()
        .delivery_stream_name(&stream.name)
        .record(Record::builder().data(Blob::new("a")).build()?)
        .send()
        .await
        .map_err(aws)?;
    stack
        .firehose
        .put_record_batch()
        .delivery_stream_name(&stream.name)
        .records(Record::builder().data(Blob::new("b")).build()?)
        .records(Record::builder().data(Blob::new("c")).build()?)
        .send()
        .await
        .map_err(aws)?;
    let objects = list_objects(&stack, &bucket.name).await?;
    assert_eq!(objects.len(), 3, "{objects:?}");
    let mut bodies = Vec::new();
    for key in &objects {
        bodies.push(String::from_utf8(
            get_object(&stack, &bucket.name, key).await?,
        )?);
    }
    bodies.sort();
    assert_eq!(bodies, ["a", "bc", text.as_str()]);
    Ok(())
}

async fn list_objects(stack: &Stack, bucket: &str) -> Result<Vec<String>> {
    let listed = stack
        .s3
        .list_objects_v2()
        .bucket(bucket)
        .send()
        .await
        .map_err(aws)
        .context("ListObjectsV2")?;
    Ok(listed
        .contents()
        .iter()
        .filter_map(|o| o.key().map(str::to_owned))
        .collect())
}

async fn get_object(stack: &Stack, bucket: &str, key: &str) -> Result<Vec<u8>> {
    let object = stack
        .s3
        .get_object()
        .bucket(bucket)
        .key(key)
        .send()
        .await
        .map_err(aws)
        .with_context(|| format!("GetObject {key}"))?;
    Ok(object.body.collect().await?.into_bytes().to_vec())
}

/// `Stack::create_named` with a prefix whose resources already exist (the local stack's
/// `--state-dir` restart) reuses them: same names and ARNs, objects kept.
#[tokio::test]
async fn creating_again_reuses_buckets_and_streams() -> Result<()> {
    let template = Template::load(fixture(FIXTURE))?;
    let first = provision("create_again").await?;
    let bucket = first.bucket("ArchiveBucket")?;
    first
        .s3
        .put_object()
        .bucket(&bucket.name)
        .key("kept.txt")
        .body(ByteStream::from_static(b"kept"))
        .send()
        .await
        .map_err(aws)?;

    let second = Stack::create_named(
        &template,
        &first.dynamodb_endpoint,
        &first.moto_endpoint,
        first.prefix.clone(),
    )
    .await?;
    assert_eq!(second.bucket("ArchiveBucket")?, bucket);
    assert_eq!(
        second.delivery_stream("ArchiveStream")?,
        first.delivery_stream("ArchiveStream")?
    );
    assert_eq!(list_objects(&second, &bucket.name).await?, ["kept.txt"]);
    assert_stack_matches(&second, &template).await
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
    // Buckets and delivery streams, if the template declares any yet, are checked by
    // `assert_stack_matches` below.
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
