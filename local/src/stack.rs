//! Creates a template's tables (DynamoDB Local) and queues (moto) under a unique name prefix.

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, GlobalSecondaryIndex, KeySchemaElement, KeyType,
    LocalSecondaryIndex, Projection, ProjectionType, ScalarAttributeType, StreamSpecification,
    StreamViewType, TableStatus, TimeToLiveSpecification,
};
use aws_sdk_sqs::types::QueueAttributeName;

use crate::emulators::{emulators, Emulators};
use crate::template::{IndexSpec, KeyElement, QueueSpec, TableSpec, Template};
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

/// The template's resources, provisioned for one test.
#[derive(Debug)]
pub struct Stack {
    pub dynamodb: aws_sdk_dynamodb::Client,
    pub sqs: aws_sdk_sqs::Client,
    /// Logical id -> physical table name.
    pub tables: HashMap<String, String>,
    /// Logical id -> queue.
    pub queues: HashMap<String, QueueInfo>,
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
    /// already exist: the local stack's `--state-dir` keeps its tables between runs.
    pub async fn create_named(
        template: &Template,
        dynamodb_endpoint: &str,
        moto_endpoint: &str,
        prefix: String,
    ) -> Result<Stack> {
        let dynamodb = aws_sdk_dynamodb::Client::new(&sdk_config(dynamodb_endpoint));
        let sqs = aws_sdk_sqs::Client::new(&sdk_config(moto_endpoint));

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

        Ok(Stack {
            dynamodb,
            sqs,
            tables,
            queues,
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

    if let Some(attribute) = &spec.ttl_attribute {
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

/// SDK errors print as "service error" by default; this keeps the code and message.
pub(crate) fn aws_error<E, R>(err: aws_sdk_dynamodb::error::SdkError<E, R>) -> anyhow::Error
where
    E: std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug + Send + Sync + 'static,
{
    let detail = aws_sdk_dynamodb::error::DisplayErrorContext(&err).to_string();
    anyhow!(err).context(detail)
}
