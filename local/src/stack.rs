//! Creates a template's tables (DynamoDB Local), queues, buckets and delivery streams (moto) under
//! a unique name prefix.

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, GlobalSecondaryIndex, KeySchemaElement, KeyType,
    LocalSecondaryIndex, Projection, ProjectionType, ScalarAttributeType, StreamSpecification,
    StreamViewType, TableStatus, TimeToLiveSpecification, TimeToLiveStatus,
};
use aws_sdk_sqs::types::QueueAttributeName;

use crate::emulators::{emulators, Emulators};
use crate::template::{
    BucketSpec, DeliveryStreamSpec, IndexSpec, KeyElement, QueueSpec, TableSpec, Template,
};
use crate::{repo_root, sdk_config};

/// A queue created from the template.
#[derive(Debug, Clone, PartialEq)]
pub struct QueueInfo {
    pub name: String,
    pub url: String,
    pub arn: String,
    /// `VisibilityTimeout` declared in the template.
    pub visibility_timeout: Option<i32>,
    /// `RedrivePolicy.maxReceiveCount` (after resolving `!Ref`).
    pub max_receive_count: Option<i32>,
    /// Logical id of the `RedrivePolicy` dead-letter target.
    pub dead_letter_logical_id: Option<String>,
}

/// An S3 bucket created from the template (on moto).
#[derive(Debug, Clone, PartialEq)]
pub struct BucketInfo {
    pub name: String,
    /// `arn:aws:s3:::<name>`.
    pub arn: String,
}

/// A Firehose delivery stream created from the template (on moto), writing to one of its buckets.
#[derive(Debug, Clone, PartialEq)]
pub struct DeliveryStreamInfo {
    pub name: String,
    pub arn: String,
    /// Logical id of the destination bucket (see [`Stack::bucket`]).
    pub bucket_logical_id: String,
    /// The destination `Prefix` as declared (moto copies it verbatim into object keys, without
    /// evaluating `!{timestamp:...}` expressions).
    pub prefix: Option<String>,
}

/// The template's resources, provisioned for one test.
#[derive(Debug)]
pub struct Stack {
    pub dynamodb: aws_sdk_dynamodb::Client,
    pub sqs: aws_sdk_sqs::Client,
    /// S3 on moto (path-style addressing).
    pub s3: aws_sdk_s3::Client,
    pub firehose: aws_sdk_firehose::Client,
    /// Logical id -> physical table name.
    pub tables: HashMap<String, String>,
    /// Logical id -> queue.
    pub queues: HashMap<String, QueueInfo>,
    /// Logical id -> bucket.
    pub buckets: HashMap<String, BucketInfo>,
    /// Logical id -> delivery stream.
    pub delivery_streams: HashMap<String, DeliveryStreamInfo>,
    /// Template parameter -> `Default`.
    pub parameters: HashMap<String, String>,
    /// The unique prefix of every physical name (`<sanitised prefix>-<8 hex>`).
    pub prefix: String,
    pub dynamodb_endpoint: String,
    pub moto_endpoint: String,
}

impl Stack {
    /// Provisions `<repo>/template.yaml`.
    pub async fn provision(prefix: &str) -> Result<Stack> {
        Stack::provision_from(repo_root().join("template.yaml"), prefix).await
    }

    /// Provisions the template at `path` (e.g. a fixture) with names starting with `prefix`
    /// plus a random suffix, so concurrent tests never share resources.
    pub async fn provision_from(path: impl AsRef<Path>, prefix: &str) -> Result<Stack> {
        let template = Template::load(path.as_ref())?;
        let emulators: &'static Emulators = tokio::task::spawn_blocking(emulators)
            .await
            .context("emulator start-up task")??;
        Stack::create(
            &template,
            &emulators.dynamodb_endpoint,
            &emulators.moto_endpoint,
            prefix,
        )
        .await
    }

    /// Creates the template's tables and queues on the given emulator endpoints, with names
    /// starting with `prefix` plus a random suffix.
    pub async fn create(
        template: &Template,
        dynamodb_endpoint: &str,
        moto_endpoint: &str,
        prefix: &str,
    ) -> Result<Stack> {
        Stack::create_named(
            template,
            dynamodb_endpoint,
            moto_endpoint,
            unique_prefix(prefix),
        )
        .await
    }

    /// Like [`Stack::create`] with exactly `prefix` (no random suffix), reusing tables that
    /// already exist: the local stack's `--state-dir` keeps its tables between runs. Queues,
    /// buckets and delivery streams that already exist are reused (and reconfigured) too.
    pub async fn create_named(
        template: &Template,
        dynamodb_endpoint: &str,
        moto_endpoint: &str,
        prefix: String,
    ) -> Result<Stack> {
        let dynamodb = aws_sdk_dynamodb::Client::new(&sdk_config(dynamodb_endpoint));
        let sqs = aws_sdk_sqs::Client::new(&sdk_config(moto_endpoint));
        let moto_config = sdk_config(moto_endpoint);
        let s3 = aws_sdk_s3::Client::from_conf(
            aws_sdk_s3::config::Builder::from(&moto_config)
                .force_path_style(true)
                .build(),
        );
        let firehose = aws_sdk_firehose::Client::new(&moto_config);

        let mut tables = HashMap::new();
        for spec in &template.tables {
            let name = physical_name(&prefix, &spec.logical_id, 255, "");
            create_table(&dynamodb, spec, &name)
                .await
                .with_context(|| format!("creating table {} ({name})", spec.logical_id))?;
            tables.insert(spec.logical_id.clone(), name);
        }

        let mut queues: HashMap<String, QueueInfo> = HashMap::new();
        for spec in template.queues_in_creation_order()? {
            let info = create_queue(&sqs, spec, &prefix, &queues)
                .await
                .with_context(|| format!("creating queue {}", spec.logical_id))?;
            queues.insert(spec.logical_id.clone(), info);
        }

        let mut buckets: HashMap<String, BucketInfo> = HashMap::new();
        for spec in &template.buckets {
            let name = bucket_name(&prefix, &spec.logical_id);
            create_bucket(&s3, spec, &name)
                .await
                .with_context(|| format!("creating bucket {} ({name})", spec.logical_id))?;
            let arn = format!("arn:aws:s3:::{name}");
            buckets.insert(spec.logical_id.clone(), BucketInfo { name, arn });
        }

        let mut delivery_streams = HashMap::new();
        for spec in &template.delivery_streams {
            let bucket = buckets.get(&spec.bucket_logical_id).ok_or_else(|| {
                anyhow!(
                    "delivery stream {}: no bucket {}",
                    spec.logical_id,
                    spec.bucket_logical_id
                )
            })?;
            let name = physical_name(&prefix, &spec.logical_id, 64, "");
            let arn = create_delivery_stream(&firehose, spec, &name, &bucket.arn)
                .await
                .with_context(|| {
                    format!("creating delivery stream {} ({name})", spec.logical_id)
                })?;
            delivery_streams.insert(
                spec.logical_id.clone(),
                DeliveryStreamInfo {
                    name,
                    arn,
                    bucket_logical_id: spec.bucket_logical_id.clone(),
                    prefix: spec.prefix.clone(),
                },
            );
        }

        Ok(Stack {
            dynamodb,
            sqs,
            s3,
            firehose,
            tables,
            queues,
            buckets,
            delivery_streams,
            parameters: template.parameters.clone(),
            prefix,
            dynamodb_endpoint: dynamodb_endpoint.to_owned(),
            moto_endpoint: moto_endpoint.to_owned(),
        })
    }

    /// Physical name of the table with this logical id.
    pub fn table(&self, logical_id: &str) -> Result<&str> {
        self.tables
            .get(logical_id)
            .map(String::as_str)
            .ok_or_else(|| {
                anyhow!(
                    "no table {logical_id} in the template (tables: {:?})",
                    sorted_keys(&self.tables)
                )
            })
    }

    /// The queue with this logical id.
    pub fn queue(&self, logical_id: &str) -> Result<&QueueInfo> {
        self.queues.get(logical_id).ok_or_else(|| {
            anyhow!(
                "no queue {logical_id} in the template (queues: {:?})",
                sorted_keys(&self.queues)
            )
        })
    }

    /// The bucket with this logical id.
    pub fn bucket(&self, logical_id: &str) -> Result<&BucketInfo> {
        self.buckets.get(logical_id).ok_or_else(|| {
            anyhow!(
                "no bucket {logical_id} in the template (buckets: {:?})",
                sorted_keys(&self.buckets)
            )
        })
    }

    /// The delivery stream with this logical id.
    pub fn delivery_stream(&self, logical_id: &str) -> Result<&DeliveryStreamInfo> {
        self.delivery_streams.get(logical_id).ok_or_else(|| {
            anyhow!(
                "no delivery stream {logical_id} in the template (delivery streams: {:?})",
                sorted_keys(&self.delivery_streams)
            )
        })
    }
}

fn sorted_keys<V>(map: &HashMap<String, V>) -> Vec<&str> {
    let mut keys: Vec<&str> = map.keys().map(String::as_str).collect();
    keys.sort_unstable();
    keys
}

/// `<prefix reduced to [A-Za-z0-9-], at most 32 chars>-<8 random hex>`.
fn unique_prefix(prefix: &str) -> String {
    let mut clean: String = prefix
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .take(32)
        .collect();
    clean = clean.trim_matches('-').to_string();
    if clean.is_empty() {
        clean.push('t');
    }
    let random = uuid::Uuid::new_v4().simple().to_string();
    format!("{clean}-{}", &random[..8])
}

fn physical_name(prefix: &str, logical_id: &str, max_len: usize, suffix: &str) -> String {
    let mut name = format!("{prefix}-{logical_id}");
    name.truncate(max_len.saturating_sub(suffix.len()));
    name.push_str(suffix);
    name
}

/// An S3 bucket name for `<prefix>-<logical id>`: lowercase, `[a-z0-9-]` only, no leading,
/// trailing or doubled `-`, 3 to 63 characters. A name that has to be shortened ends in a hash
/// of the full one, so two long logical ids never collide.
pub fn bucket_name(prefix: &str, logical_id: &str) -> String {
    const MAX: usize = 63;
    let full = format!("{prefix}-{logical_id}");
    let mut name = String::with_capacity(full.len());
    for c in full.chars() {
        let c = if c.is_ascii_alphanumeric() {
            c.to_ascii_lowercase()
        } else {
            '-'
        };
        if !(c == '-' && (name.is_empty() || name.ends_with('-'))) {
            name.push(c);
        }
    }
    while name.ends_with('-') {
        name.pop();
    }
    if name.len() > MAX {
        // FNV-1a of the unsanitised name: stable across runs and platforms.
        let hash = full.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
        });
        let suffix = format!("-{:08x}", hash as u32);
        name.truncate(MAX - suffix.len());
        while name.ends_with('-') {
            name.pop();
        }
        name.push_str(&suffix);
    }
    while name.len() < 3 {
        name.push('0');
    }
    name
}

fn key_schema(elements: &[KeyElement]) -> Result<Vec<KeySchemaElement>> {
    elements
        .iter()
        .map(|e| {
            KeySchemaElement::builder()
                .attribute_name(&e.attribute_name)
                .key_type(KeyType::from(e.key_type.as_str()))
                .build()
                .context("KeySchemaElement")
        })
        .collect()
}

fn projection(index: &IndexSpec) -> Projection {
    let mut projection =
        Projection::builder().projection_type(ProjectionType::from(index.projection_type.as_str()));
    for attribute in &index.non_key_attributes {
        projection = projection.non_key_attributes(attribute);
    }
    projection.build()
}

async fn create_table(
    client: &aws_sdk_dynamodb::Client,
    spec: &TableSpec,
    name: &str,
) -> Result<()> {
    let mut request = client
        .create_table()
        .table_name(name)
        .billing_mode(BillingMode::PayPerRequest)
        .set_key_schema(Some(key_schema(&spec.key_schema)?));
    for definition in &spec.attribute_definitions {
        request = request.attribute_definitions(
            AttributeDefinition::builder()
                .attribute_name(&definition.attribute_name)
                .attribute_type(ScalarAttributeType::from(
                    definition.attribute_type.as_str(),
                ))
                .build()
                .context("AttributeDefinition")?,
        );
    }
    for index in &spec.global_secondary_indexes {
        request = request.global_secondary_indexes(
            GlobalSecondaryIndex::builder()
                .index_name(&index.index_name)
                .set_key_schema(Some(key_schema(&index.key_schema)?))
                .projection(projection(index))
                .build()
                .with_context(|| format!("GSI {}", index.index_name))?,
        );
    }
    for index in &spec.local_secondary_indexes {
        request = request.local_secondary_indexes(
            LocalSecondaryIndex::builder()
                .index_name(&index.index_name)
                .set_key_schema(Some(key_schema(&index.key_schema)?))
                .projection(projection(index))
                .build()
                .with_context(|| format!("LSI {}", index.index_name))?,
        );
    }
    if let Some(view_type) = &spec.stream_view_type {
        request = request.stream_specification(
            StreamSpecification::builder()
                .stream_enabled(true)
                .stream_view_type(StreamViewType::from(view_type.as_str()))
                .build()
                .context("StreamSpecification")?,
        );
    }
    if let Err(e) = request.send().await {
        let exists = e
            .as_service_error()
            .is_some_and(|s| s.is_resource_in_use_exception());
        if !exists {
            return Err(aws_error(e));
        }
    }

    // DynamoDB Local creates tables ACTIVE, but do not rely on it.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let described = client
            .describe_table()
            .table_name(name)
            .send()
            .await
            .map_err(aws_error)?;
        let status = described.table().and_then(|t| t.table_status());
        if status == Some(&TableStatus::Active) {
            break;
        }
        if Instant::now() >= deadline {
            bail!("table {name} still {status:?} after 30 s");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let ttl_enabled = match &spec.ttl_attribute {
        Some(_) => client
            .describe_time_to_live()
            .table_name(name)
            .send()
            .await
            .map_err(aws_error)
            .context("DescribeTimeToLive")?
            .time_to_live_description()
            .and_then(|d| d.time_to_live_status())
            .is_some_and(|s| matches!(s, TimeToLiveStatus::Enabled | TimeToLiveStatus::Enabling)),
        None => false,
    };
    // A kept state directory (or a rerun) finds the table with TTL already on.
    if let Some(attribute) = spec.ttl_attribute.as_ref().filter(|_| !ttl_enabled) {
        client
            .update_time_to_live()
            .table_name(name)
            .time_to_live_specification(
                TimeToLiveSpecification::builder()
                    .attribute_name(attribute)
                    .enabled(true)
                    .build()
                    .context("TimeToLiveSpecification")?,
            )
            .send()
            .await
            .map_err(aws_error)
            .context("UpdateTimeToLive")?;
    }
    Ok(())
}

async fn create_queue(
    client: &aws_sdk_sqs::Client,
    spec: &QueueSpec,
    prefix: &str,
    created: &HashMap<String, QueueInfo>,
) -> Result<QueueInfo> {
    let suffix = if spec.fifo_queue { ".fifo" } else { "" };
    let name = physical_name(prefix, &spec.logical_id, 80, suffix);
    let mut request = client.create_queue().queue_name(&name);
    let numeric = [
        (
            QueueAttributeName::VisibilityTimeout,
            spec.visibility_timeout,
        ),
        (
            QueueAttributeName::MessageRetentionPeriod,
            spec.message_retention_period,
        ),
        (QueueAttributeName::DelaySeconds, spec.delay_seconds),
        (
            QueueAttributeName::ReceiveMessageWaitTimeSeconds,
            spec.receive_message_wait_time_seconds,
        ),
        (
            QueueAttributeName::MaximumMessageSize,
            spec.maximum_message_size,
        ),
    ];
    for (attribute, value) in numeric {
        if let Some(value) = value {
            request = request.attributes(attribute, value.to_string());
        }
    }
    if spec.fifo_queue {
        request = request.attributes(QueueAttributeName::FifoQueue, "true");
        if spec.content_based_deduplication {
            request = request.attributes(QueueAttributeName::ContentBasedDeduplication, "true");
        }
    }
    if let Some(redrive) = &spec.redrive {
        let target = created
            .get(&redrive.dead_letter_logical_id)
            .ok_or_else(|| {
                anyhow!(
                    "dead-letter queue {} not created yet",
                    redrive.dead_letter_logical_id
                )
            })?;
        let policy = serde_json::json!({
            "deadLetterTargetArn": target.arn,
            "maxReceiveCount": redrive.max_receive_count,
        });
        request = request.attributes(QueueAttributeName::RedrivePolicy, policy.to_string());
    }
    let url = request
        .send()
        .await
        .map_err(aws_error)?
        .queue_url
        .ok_or_else(|| anyhow!("CreateQueue returned no QueueUrl"))?;
    let attributes = client
        .get_queue_attributes()
        .queue_url(&url)
        .attribute_names(QueueAttributeName::QueueArn)
        .send()
        .await
        .map_err(aws_error)
        .context("GetQueueAttributes QueueArn")?;
    let arn = attributes
        .attributes()
        .and_then(|a| a.get(&QueueAttributeName::QueueArn))
        .cloned()
        .ok_or_else(|| anyhow!("GetQueueAttributes returned no QueueArn for {url}"))?;
    Ok(QueueInfo {
        name,
        url,
        arn,
        visibility_timeout: spec.visibility_timeout,
        max_receive_count: spec.redrive.as_ref().map(|r| r.max_receive_count),
        dead_letter_logical_id: spec
            .redrive
            .as_ref()
            .map(|r| r.dead_letter_logical_id.clone()),
    })
}

async fn create_bucket(client: &aws_sdk_s3::Client, spec: &BucketSpec, name: &str) -> Result<()> {
    use aws_sdk_s3::types::{
        AbortIncompleteMultipartUpload, BucketLifecycleConfiguration, BucketVersioningStatus,
        ExpirationStatus, LifecycleExpiration, LifecycleRule, LifecycleRuleFilter,
        NoncurrentVersionExpiration, PublicAccessBlockConfiguration, ServerSideEncryption,
        ServerSideEncryptionByDefault, ServerSideEncryptionConfiguration, ServerSideEncryptionRule,
        Transition, TransitionStorageClass, VersioningConfiguration,
    };

    // us-east-1: no LocationConstraint. moto (like AWS) answers BucketAlreadyOwnedByYou or
    // simply succeeds for a bucket that exists; either way the settings below are re-applied.
    if let Err(e) = client.create_bucket().bucket(name).send().await {
        let exists = e
            .as_service_error()
            .is_some_and(|s| s.is_bucket_already_owned_by_you());
        if !exists {
            return Err(aws_error(e));
        }
    }

    if let Some(encryption) = &spec.encryption {
        let default = ServerSideEncryptionByDefault::builder()
            .sse_algorithm(ServerSideEncryption::from(
                encryption.sse_algorithm.as_str(),
            ))
            .set_kms_master_key_id(encryption.kms_master_key_id.clone())
            .build()
            .context("ServerSideEncryptionByDefault")?;
        let rule = ServerSideEncryptionRule::builder()
            .apply_server_side_encryption_by_default(default)
            .set_bucket_key_enabled(encryption.bucket_key_enabled)
            .build();
        client
            .put_bucket_encryption()
            .bucket(name)
            .server_side_encryption_configuration(
                ServerSideEncryptionConfiguration::builder()
                    .rules(rule)
                    .build()
                    .context("ServerSideEncryptionConfiguration")?,
            )
            .send()
            .await
            .map_err(aws_error)
            .context("PutBucketEncryption")?;
    }

    if let Some(block) = &spec.public_access_block {
        client
            .put_public_access_block()
            .bucket(name)
            .public_access_block_configuration(
                PublicAccessBlockConfiguration::builder()
                    .block_public_acls(block.block_public_acls)
                    .block_public_policy(block.block_public_policy)
                    .ignore_public_acls(block.ignore_public_acls)
                    .restrict_public_buckets(block.restrict_public_buckets)
                    .build(),
            )
            .send()
            .await
            .map_err(aws_error)
            .context("PutPublicAccessBlock")?;
    }

    // Versioning before lifecycle: noncurrent-version rules presuppose it.
    if let Some(status) = &spec.versioning {
        client
            .put_bucket_versioning()
            .bucket(name)
            .versioning_configuration(
                VersioningConfiguration::builder()
                    .status(BucketVersioningStatus::from(status.as_str()))
                    .build(),
            )
            .send()
            .await
            .map_err(aws_error)
            .context("PutBucketVersioning")?;
    }

    if !spec.lifecycle_rules.is_empty() {
        let mut configuration = BucketLifecycleConfiguration::builder();
        for rule in &spec.lifecycle_rules {
            let mut builder = LifecycleRule::builder()
                .set_id(rule.id.clone())
                .status(if rule.enabled {
                    ExpirationStatus::Enabled
                } else {
                    ExpirationStatus::Disabled
                })
                .filter(
                    LifecycleRuleFilter::builder()
                        .prefix(rule.prefix.clone().unwrap_or_default())
                        .build(),
                );
            if let Some(days) = rule.expiration_in_days {
                builder = builder.expiration(LifecycleExpiration::builder().days(days).build());
            }
            if let Some(days) = rule.noncurrent_version_expiration_in_days {
                builder = builder.noncurrent_version_expiration(
                    NoncurrentVersionExpiration::builder()
                        .noncurrent_days(days)
                        .build(),
                );
            }
            if let Some(days) = rule.abort_incomplete_multipart_upload_days {
                builder = builder.abort_incomplete_multipart_upload(
                    AbortIncompleteMultipartUpload::builder()
                        .days_after_initiation(days)
                        .build(),
                );
            }
            for transition in &rule.transitions {
                builder = builder.transitions(
                    Transition::builder()
                        .days(transition.transition_in_days)
                        .storage_class(TransitionStorageClass::from(
                            transition.storage_class.as_str(),
                        ))
                        .build(),
                );
            }
            configuration = configuration.rules(builder.build().context("LifecycleRule")?);
        }
        client
            .put_bucket_lifecycle_configuration()
            .bucket(name)
            .lifecycle_configuration(configuration.build().context("LifecycleConfiguration")?)
            .send()
            .await
            .map_err(aws_error)
            .context("PutBucketLifecycleConfiguration")?;
    }
    Ok(())
}

/// Placeholder role for a delivery stream whose `RoleARN` is not a plain string (moto ignores it).
const FIREHOSE_ROLE_ARN: &str = "arn:aws:iam::123456789012:role/tally-local-firehose";

/// Creates a DirectPut delivery stream to `bucket_arn` (always as an `ExtendedS3` destination,
/// which covers everything a plain `S3` destination declares), or updates the destination of
/// one that already exists. Returns its ARN.
async fn create_delivery_stream(
    client: &aws_sdk_firehose::Client,
    spec: &DeliveryStreamSpec,
    name: &str,
    bucket_arn: &str,
) -> Result<String> {
    use aws_sdk_firehose::types::{
        BufferingHints, CompressionFormat, DeliveryStreamType, ExtendedS3DestinationConfiguration,
        ExtendedS3DestinationUpdate,
    };

    let hints = (spec.buffering_interval_seconds.is_some() || spec.buffering_size_mb.is_some())
        .then(|| {
            BufferingHints::builder()
                .set_interval_in_seconds(spec.buffering_interval_seconds)
                .set_size_in_mbs(spec.buffering_size_mb)
                .build()
        });
    let compression = spec
        .compression_format
        .as_deref()
        .map(CompressionFormat::from);
    let role_arn = spec.role_arn.as_deref().unwrap_or(FIREHOSE_ROLE_ARN);
    let destination = ExtendedS3DestinationConfiguration::builder()
        .role_arn(role_arn)
        .bucket_arn(bucket_arn)
        .set_prefix(spec.prefix.clone())
        .set_error_output_prefix(spec.error_output_prefix.clone())
        .set_buffering_hints(hints.clone())
        .set_compression_format(compression.clone())
        .build()
        .context("ExtendedS3DestinationConfiguration")?;
    let created = client
        .create_delivery_stream()
        .delivery_stream_name(name)
        .delivery_stream_type(DeliveryStreamType::DirectPut)
        .extended_s3_destination_configuration(destination)
        .send()
        .await;
    match created {
        Ok(output) => {
            if let Some(arn) = output.delivery_stream_arn {
                return Ok(arn);
            }
        }
        Err(e) => {
            let exists = e
                .as_service_error()
                .is_some_and(|s| s.is_resource_in_use_exception());
            if !exists {
                return Err(aws_error(e));
            }
            // It exists (a restart against a moto that kept its state): point it at this
            // template's destination.
            let described = describe_delivery_stream(client, name).await?;
            let destination_id = described
                .destinations()
                .first()
                .map(|d| d.destination_id().to_owned())
                .ok_or_else(|| anyhow!("delivery stream {name} has no destination"))?;
            client
                .update_destination()
                .delivery_stream_name(name)
                .current_delivery_stream_version_id(described.version_id())
                .destination_id(destination_id)
                .extended_s3_destination_update(
                    ExtendedS3DestinationUpdate::builder()
                        .role_arn(role_arn)
                        .bucket_arn(bucket_arn)
                        .set_prefix(spec.prefix.clone())
                        .set_error_output_prefix(spec.error_output_prefix.clone())
                        .set_buffering_hints(hints)
                        .set_compression_format(compression)
                        .build(),
                )
                .send()
                .await
                .map_err(aws_error)
                .context("UpdateDestination")?;
        }
    }
    let described = describe_delivery_stream(client, name).await?;
    Ok(described.delivery_stream_arn().to_owned())
}

async fn describe_delivery_stream(
    client: &aws_sdk_firehose::Client,
    name: &str,
) -> Result<aws_sdk_firehose::types::DeliveryStreamDescription> {
    client
        .describe_delivery_stream()
        .delivery_stream_name(name)
        .send()
        .await
        .map_err(aws_error)
        .context("DescribeDeliveryStream")?
        .delivery_stream_description
        .ok_or_else(|| anyhow!("DescribeDeliveryStream {name}: no description"))
}

/// SDK errors print as "service error" by default; this keeps the code and message.
pub(crate) fn aws_error<E, R>(err: aws_sdk_dynamodb::error::SdkError<E, R>) -> anyhow::Error
where
    E: std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug + Send + Sync + 'static,
{
    let detail = aws_sdk_dynamodb::error::DisplayErrorContext(&err).to_string();
    anyhow!(err).context(detail)
}
