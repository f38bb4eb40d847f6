//! Reads the DynamoDB tables, SQS queues, S3 buckets and Firehose delivery streams declared in a
//! CloudFormation/SAM template.
//!
//! Only what the emulators need is read: `AWS::DynamoDB::Table` (`KeySchema`,
//! `AttributeDefinitions`, `GlobalSecondaryIndexes`, `LocalSecondaryIndexes`,
//! `StreamSpecification`, `TimeToLiveSpecification`), `AWS::SQS::Queue` (`VisibilityTimeout`,
//! `MessageRetentionPeriod`, `DelaySeconds`, `ReceiveMessageWaitTimeSeconds`,
//! `MaximumMessageSize`, `FifoQueue`, `ContentBasedDeduplication`, `RedrivePolicy`),
//! `AWS::S3::Bucket` (`BucketEncryption`, `PublicAccessBlockConfiguration`,
//! `LifecycleConfiguration`, `VersioningConfiguration`) and `AWS::KinesisFirehose::DeliveryStream`
//! (`DeliveryStreamType`, and of `ExtendedS3DestinationConfiguration` or
//! `S3DestinationConfiguration`: `BucketARN`, `Prefix`, `ErrorOutputPrefix`, `BufferingHints`,
//! `CompressionFormat`). Everything else (functions, names, billing, roles, ...) is ignored;
//! physical names come from the test's prefix.
//!
//! Intrinsics are accepted in short (`!Ref X`, serde_yaml's `Value::Tagged`) and long form
//! (`{Ref: X}`): `Ref` to a parameter resolves to its `Default`, `Ref` to a pseudo parameter to a
//! fixed test value, `Sub` substitutes those, `GetAtt <Queue>.Arn` is only meaningful as a
//! `RedrivePolicy.deadLetterTargetArn` and `GetAtt <Bucket>.Arn` as a delivery stream's
//! `BucketARN`.

use std::collections::HashMap;
use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};
use serde_yaml::Value;

/// The parsed parts of a template.
#[derive(Debug, Clone, PartialEq)]
pub struct Template {
    /// Parameter name -> `Default` (as a string); parameters without a default are absent.
    pub parameters: HashMap<String, String>,
    /// Tables in template order.
    pub tables: Vec<TableSpec>,
    /// Queues in template order.
    pub queues: Vec<QueueSpec>,
    /// S3 buckets in template order.
    pub buckets: Vec<BucketSpec>,
    /// Firehose delivery streams in template order.
    pub delivery_streams: Vec<DeliveryStreamSpec>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct KeyElement {
    pub attribute_name: String,
    /// `HASH` or `RANGE`.
    pub key_type: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct AttributeDefinition {
    pub attribute_name: String,
    /// `S`, `N` or `B`.
    pub attribute_type: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct IndexSpec {
    pub index_name: String,
    pub key_schema: Vec<KeyElement>,
    /// `ALL`, `KEYS_ONLY` or `INCLUDE`.
    pub projection_type: String,
    pub non_key_attributes: Vec<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct TableSpec {
    pub logical_id: String,
    pub key_schema: Vec<KeyElement>,
    pub attribute_definitions: Vec<AttributeDefinition>,
    pub global_secondary_indexes: Vec<IndexSpec>,
    pub local_secondary_indexes: Vec<IndexSpec>,
    /// `StreamSpecification.StreamViewType`, when a stream is declared.
    pub stream_view_type: Option<String>,
    /// `TimeToLiveSpecification.AttributeName` when `Enabled` is true.
    pub ttl_attribute: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct RedriveSpec {
    pub dead_letter_logical_id: String,
    pub max_receive_count: i32,
}

#[derive(Debug, Clone, PartialEq)]
pub struct QueueSpec {
    pub logical_id: String,
    pub visibility_timeout: Option<i32>,
    pub message_retention_period: Option<i32>,
    pub delay_seconds: Option<i32>,
    pub receive_message_wait_time_seconds: Option<i32>,
    pub maximum_message_size: Option<i32>,
    pub fifo_queue: bool,
    pub content_based_deduplication: bool,
    pub redrive: Option<RedriveSpec>,
}

/// `BucketEncryption.ServerSideEncryptionConfiguration[0]`.
#[derive(Debug, Clone, PartialEq)]
pub struct BucketEncryptionSpec {
    /// `AES256`, `aws:kms` or `aws:kms:dsse`.
    pub sse_algorithm: String,
    /// `KMSMasterKeyID` when it is a literal (or resolves to one); a `!Ref`/`!GetAtt` of a key
    /// in the template is dropped, since no KMS key exists locally.
    pub kms_master_key_id: Option<String>,
    pub bucket_key_enabled: Option<bool>,
}

/// `PublicAccessBlockConfiguration` (absent flags are false, as in CloudFormation).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PublicAccessBlockSpec {
    pub block_public_acls: bool,
    pub block_public_policy: bool,
    pub ignore_public_acls: bool,
    pub restrict_public_buckets: bool,
}

/// One `LifecycleConfiguration.Rules` entry.
#[derive(Debug, Clone, PartialEq)]
pub struct LifecycleRuleSpec {
    pub id: Option<String>,
    /// `Status: Enabled`.
    pub enabled: bool,
    /// Rule `Prefix` (CloudFormation's rule-level filter); `None` applies to every object.
    pub prefix: Option<String>,
    pub expiration_in_days: Option<i32>,
    pub noncurrent_version_expiration_in_days: Option<i32>,
    pub abort_incomplete_multipart_upload_days: Option<i32>,
    pub transitions: Vec<TransitionSpec>,
}

/// A lifecycle `Transitions` entry (`TransitionInDays` only).
#[derive(Debug, Clone, PartialEq)]
pub struct TransitionSpec {
    pub storage_class: String,
    pub transition_in_days: i32,
}

#[derive(Debug, Clone, PartialEq)]
pub struct BucketSpec {
    pub logical_id: String,
    pub encryption: Option<BucketEncryptionSpec>,
    pub public_access_block: Option<PublicAccessBlockSpec>,
    pub lifecycle_rules: Vec<LifecycleRuleSpec>,
    /// `VersioningConfiguration.Status` (`Enabled` or `Suspended`).
    pub versioning: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct DeliveryStreamSpec {
    pub logical_id: String,
    /// Logical id of the `AWS::S3::Bucket` that `BucketARN` (`!GetAtt <Bucket>.Arn`) names.
    pub bucket_logical_id: String,
    /// True for `ExtendedS3DestinationConfiguration`, false for `S3DestinationConfiguration`.
    pub extended: bool,
    pub prefix: Option<String>,
    pub error_output_prefix: Option<String>,
    /// `BufferingHints.IntervalInSeconds`.
    pub buffering_interval_seconds: Option<i32>,
    /// `BufferingHints.SizeInMBs`.
    pub buffering_size_mb: Option<i32>,
    /// `UNCOMPRESSED`, `GZIP`, `ZIP`, `Snappy` or `HADOOP_SNAPPY`.
    pub compression_format: Option<String>,
    /// `RoleARN` when it resolves to a string (moto ignores it; a placeholder is used otherwise).
    pub role_arn: Option<String>,
}

/// Pseudo parameters resolved by `Ref`/`Sub` (values match moto's defaults).
const PSEUDO_PARAMETERS: &[(&str, &str)] = &[
    ("AWS::Region", "us-east-1"),
    ("AWS::AccountId", "123456789012"),
    ("AWS::Partition", "aws"),
    ("AWS::URLSuffix", "amazonaws.com"),
    ("AWS::StackName", "tally-local"),
    ("AWS::NoValue", ""),
];

impl Template {
    pub fn load(path: impl AsRef<Path>) -> Result<Template> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading template {}", path.display()))?;
        Template::parse(&text).with_context(|| format!("in template {}", path.display()))
    }

    pub fn parse(text: &str) -> Result<Template> {
        let doc: Value = serde_yaml::from_str(text).context("parsing YAML")?;
        let parameters = parse_parameters(doc.get("Parameters"))?;
        let resolver = Resolver {
            parameters: &parameters,
        };
        let mut tables = Vec::new();
        let mut queues = Vec::new();
        let mut buckets = Vec::new();
        let mut delivery_streams = Vec::new();
        let resources = doc
            .get("Resources")
            .and_then(Value::as_mapping)
            .ok_or_else(|| anyhow!("no Resources mapping"))?;
        for (id, resource) in resources {
            let id = id
                .as_str()
                .ok_or_else(|| anyhow!("non-string logical id {id:?}"))?;
            let empty = Value::Mapping(Default::default());
            let props = resource.get("Properties").unwrap_or(&empty);
            match resource.get("Type").and_then(Value::as_str) {
                Some("AWS::DynamoDB::Table") => tables.push(
                    parse_table(id, props, &resolver).with_context(|| format!("table {id}"))?,
                ),
                Some("AWS::SQS::Queue") => queues.push(
                    parse_queue(id, props, &resolver).with_context(|| format!("queue {id}"))?,
                ),
                Some("AWS::S3::Bucket") => buckets.push(
                    parse_bucket(id, props, &resolver).with_context(|| format!("bucket {id}"))?,
                ),
                Some("AWS::KinesisFirehose::DeliveryStream") => delivery_streams.push(
                    parse_delivery_stream(id, props, &resolver)
                        .with_context(|| format!("delivery stream {id}"))?,
                ),
                _ => {}
            }
        }
        let queue_ids: Vec<&str> = queues.iter().map(|q| q.logical_id.as_str()).collect();
        for queue in &queues {
            if let Some(redrive) = &queue.redrive {
                if !queue_ids.contains(&redrive.dead_letter_logical_id.as_str()) {
                    bail!(
                        "queue {}: deadLetterTargetArn refers to {}, which is not an AWS::SQS::Queue of this template",
                        queue.logical_id,
                        redrive.dead_letter_logical_id
                    );
                }
            }
        }
        for stream in &delivery_streams {
            if !buckets
                .iter()
                .any(|b: &BucketSpec| b.logical_id == stream.bucket_logical_id)
            {
                bail!(
                    "delivery stream {}: BucketARN refers to {}, which is not an AWS::S3::Bucket of this template",
                    stream.logical_id,
                    stream.bucket_logical_id
                );
            }
        }
        Ok(Template {
            parameters,
            tables,
            queues,
            buckets,
            delivery_streams,
        })
    }

    pub fn table(&self, logical_id: &str) -> Option<&TableSpec> {
        self.tables.iter().find(|t| t.logical_id == logical_id)
    }

    pub fn queue(&self, logical_id: &str) -> Option<&QueueSpec> {
        self.queues.iter().find(|q| q.logical_id == logical_id)
    }

    pub fn bucket(&self, logical_id: &str) -> Option<&BucketSpec> {
        self.buckets.iter().find(|b| b.logical_id == logical_id)
    }

    pub fn delivery_stream(&self, logical_id: &str) -> Option<&DeliveryStreamSpec> {
        self.delivery_streams
            .iter()
            .find(|d| d.logical_id == logical_id)
    }

    /// Queues ordered so that every dead-letter target comes before the queues redriving to it.
    pub fn queues_in_creation_order(&self) -> Result<Vec<&QueueSpec>> {
        let mut ordered: Vec<&QueueSpec> = Vec::with_capacity(self.queues.len());
        let mut pending: Vec<&QueueSpec> = self.queues.iter().collect();
        while !pending.is_empty() {
            let before = pending.len();
            pending.retain(|queue| {
                let ready = queue.redrive.as_ref().is_none_or(|r| {
                    ordered
                        .iter()
                        .any(|done| done.logical_id == r.dead_letter_logical_id)
                });
                if ready {
                    ordered.push(queue);
                }
                !ready
            });
            if pending.len() == before {
                let ids: Vec<&str> = pending.iter().map(|q| q.logical_id.as_str()).collect();
                bail!("dead-letter queues form a cycle: {ids:?}");
            }
        }
        Ok(ordered)
    }
}

fn parse_parameters(section: Option<&Value>) -> Result<HashMap<String, String>> {
    let mut parameters = HashMap::new();
    let Some(section) = section.and_then(Value::as_mapping) else {
        return Ok(parameters);
    };
    for (name, spec) in section {
        let name = name
            .as_str()
            .ok_or_else(|| anyhow!("non-string parameter name {name:?}"))?;
        if let Some(default) = spec.get("Default") {
            let default = match default {
                Value::String(s) => s.clone(),
                Value::Number(n) => n.to_string(),
                Value::Bool(b) => b.to_string(),
                Value::Sequence(items) => items
                    .iter()
                    .map(|v| literal(v).ok_or_else(|| anyhow!("parameter {name}: bad Default")))
                    .collect::<Result<Vec<_>>>()?
                    .join(","),
                other => bail!("parameter {name}: unsupported Default {other:?}"),
            };
            parameters.insert(name.to_string(), default);
        }
    }
    Ok(parameters)
}

/// The `Properties` of the template's first `AWS::Serverless::HttpApi`, if it has one.
pub(crate) fn http_api_properties(doc: &Value) -> Option<&Value> {
    doc.get("Resources")
        .and_then(Value::as_mapping)
        .into_iter()
        .flatten()
        .map(|(_, r)| r)
        .find(|r| r.get("Type").and_then(Value::as_str) == Some("AWS::Serverless::HttpApi"))
        .and_then(|a| a.get("Properties"))
}

pub(crate) fn literal(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// An intrinsic function call, short or long form.
pub(crate) enum Intrinsic<'a> {
    Ref(&'a Value),
    GetAtt(&'a Value),
    Sub(&'a Value),
    Other(String),
}

pub(crate) fn intrinsic(value: &Value) -> Option<Intrinsic<'_>> {
    match value {
        Value::Tagged(tagged) => Some(if tagged.tag == "Ref" {
            Intrinsic::Ref(&tagged.value)
        } else if tagged.tag == "GetAtt" {
            Intrinsic::GetAtt(&tagged.value)
        } else if tagged.tag == "Sub" {
            Intrinsic::Sub(&tagged.value)
        } else {
            Intrinsic::Other(tagged.tag.to_string())
        }),
        Value::Mapping(map) if map.len() == 1 => {
            let (key, arg) = map.iter().next()?;
            match key.as_str()? {
                "Ref" => Some(Intrinsic::Ref(arg)),
                "Fn::GetAtt" => Some(Intrinsic::GetAtt(arg)),
                "Fn::Sub" => Some(Intrinsic::Sub(arg)),
                other if other.starts_with("Fn::") || other == "Condition" => {
                    Some(Intrinsic::Other(other.to_string()))
                }
                _ => None,
            }
        }
        _ => None,
    }
}

/// `X.Arn` / `[X, Arn]` -> (`X`, `Arn`).
pub(crate) fn get_att_target(arg: &Value) -> Result<(String, String)> {
    match arg {
        Value::String(s) => {
            let (id, attr) = s
                .split_once('.')
                .ok_or_else(|| anyhow!("GetAtt {s:?}: expected LogicalId.Attribute"))?;
            Ok((id.to_string(), attr.to_string()))
        }
        Value::Sequence(items) if items.len() == 2 => {
            match (items[0].as_str(), items[1].as_str()) {
                (Some(id), Some(attr)) => Ok((id.to_string(), attr.to_string())),
                _ => bail!("GetAtt {items:?}: expected [LogicalId, Attribute]"),
            }
        }
        other => bail!("GetAtt {other:?}: expected LogicalId.Attribute"),
    }
}

struct Resolver<'a> {
    parameters: &'a HashMap<String, String>,
}

impl Resolver<'_> {
    fn reference(&self, name: &str) -> Result<String> {
        if let Some(value) = self.parameters.get(name) {
            return Ok(value.clone());
        }
        if let Some((_, value)) = PSEUDO_PARAMETERS.iter().find(|(n, _)| *n == name) {
            return Ok((*value).to_string());
        }
        bail!("!Ref {name}: not a parameter with a Default nor a supported pseudo parameter")
    }

    fn substitute(&self, arg: &Value) -> Result<String> {
        let (template, vars) = match arg {
            Value::String(s) => (s.as_str(), None),
            Value::Sequence(items) if items.len() == 2 => (
                items[0]
                    .as_str()
                    .ok_or_else(|| anyhow!("!Sub: first element must be a string"))?,
                items[1].as_mapping(),
            ),
            other => bail!("!Sub {other:?}: unsupported form"),
        };
        let mut out = String::new();
        let mut rest = template;
        while let Some(start) = rest.find("${") {
            out.push_str(&rest[..start]);
            let after = &rest[start + 2..];
            let end = after
                .find('}')
                .ok_or_else(|| anyhow!("!Sub {template:?}: unclosed ${{"))?;
            let name = &after[..end];
            if let Some(literal) = name.strip_prefix('!') {
                out.push_str("${");
                out.push_str(literal);
                out.push('}');
            } else if let Some(value) = vars.and_then(|m| m.get(name)) {
                out.push_str(&self.scalar(value)?);
            } else {
                out.push_str(&self.reference(name)?);
            }
            rest = &after[end + 1..];
        }
        out.push_str(rest);
        Ok(out)
    }

    /// A scalar property value as a string, resolving `Ref`/`Sub`.
    fn scalar(&self, value: &Value) -> Result<String> {
        if let Some(s) = literal(value) {
            return Ok(s);
        }
        match intrinsic(value) {
            Some(Intrinsic::Ref(arg)) => {
                let name = arg
                    .as_str()
                    .ok_or_else(|| anyhow!("!Ref {arg:?}: expected a name"))?;
                self.reference(name)
            }
            Some(Intrinsic::Sub(arg)) => self.substitute(arg),
            Some(Intrinsic::GetAtt(arg)) => {
                bail!("!GetAtt {arg:?} is only supported as a RedrivePolicy deadLetterTargetArn or a delivery stream BucketARN")
            }
            Some(Intrinsic::Other(name)) => bail!("intrinsic {name} is not supported here"),
            None => bail!("expected a scalar, found {value:?}"),
        }
    }

    fn string(&self, props: &Value, key: &str) -> Result<String> {
        let value = props.get(key).ok_or_else(|| anyhow!("missing {key}"))?;
        self.scalar(value).with_context(|| key.to_string())
    }

    fn opt_int(&self, props: &Value, key: &str) -> Result<Option<i32>> {
        props
            .get(key)
            .map(|v| {
                let s = self.scalar(v).with_context(|| key.to_string())?;
                s.trim()
                    .parse::<i32>()
                    .with_context(|| format!("{key}: {s:?} is not an integer"))
            })
            .transpose()
    }

    fn opt_bool(&self, props: &Value, key: &str) -> Result<Option<bool>> {
        props
            .get(key)
            .map(|v| {
                let s = self.scalar(v).with_context(|| key.to_string())?;
                match s.trim().to_ascii_lowercase().as_str() {
                    "true" => Ok(true),
                    "false" => Ok(false),
                    _ => bail!("{key}: {s:?} is not a boolean"),
                }
            })
            .transpose()
    }

    fn opt_string(&self, props: &Value, key: &str) -> Result<Option<String>> {
        props
            .get(key)
            .map(|v| self.scalar(v).with_context(|| key.to_string()))
            .transpose()
    }

    fn list<'v>(&self, props: &'v Value, key: &str) -> Result<&'v [Value]> {
        match props.get(key) {
            None => Ok(&[]),
            Some(Value::Sequence(items)) => Ok(items),
            Some(other) => bail!("{key}: expected a list, found {other:?}"),
        }
    }

    fn key_schema(&self, props: &Value) -> Result<Vec<KeyElement>> {
        let elements = self
            .list(props, "KeySchema")?
            .iter()
            .map(|e| {
                Ok(KeyElement {
                    attribute_name: self.string(e, "AttributeName")?,
                    key_type: self.string(e, "KeyType")?,
                })
            })
            .collect::<Result<Vec<_>>>()
            .context("KeySchema")?;
        if elements.is_empty() {
            bail!("missing KeySchema");
        }
        Ok(elements)
    }

    fn index(&self, props: &Value) -> Result<IndexSpec> {
        let index_name = self.string(props, "IndexName")?;
        let projection = props
            .get("Projection")
            .ok_or_else(|| anyhow!("index {index_name}: missing Projection"))?;
        Ok(IndexSpec {
            key_schema: self
                .key_schema(props)
                .with_context(|| format!("index {index_name}"))?,
            projection_type: match projection.get("ProjectionType") {
                Some(v) => self.scalar(v)?,
                None => "ALL".to_string(),
            },
            non_key_attributes: self
                .list(projection, "NonKeyAttributes")?
                .iter()
                .map(|v| self.scalar(v))
                .collect::<Result<Vec<_>>>()?,
            index_name,
        })
    }
}

fn parse_table(id: &str, props: &Value, r: &Resolver<'_>) -> Result<TableSpec> {
    let attribute_definitions = r
        .list(props, "AttributeDefinitions")?
        .iter()
        .map(|d| {
            Ok(AttributeDefinition {
                attribute_name: r.string(d, "AttributeName")?,
                attribute_type: r.string(d, "AttributeType")?,
            })
        })
        .collect::<Result<Vec<_>>>()
        .context("AttributeDefinitions")?;
    let global_secondary_indexes = r
        .list(props, "GlobalSecondaryIndexes")?
        .iter()
        .map(|i| r.index(i))
        .collect::<Result<Vec<_>>>()
        .context("GlobalSecondaryIndexes")?;
    let local_secondary_indexes = r
        .list(props, "LocalSecondaryIndexes")?
        .iter()
        .map(|i| r.index(i))
        .collect::<Result<Vec<_>>>()
        .context("LocalSecondaryIndexes")?;
    let stream_view_type = match props.get("StreamSpecification") {
        Some(spec) => spec
            .get("StreamViewType")
            .map(|v| r.scalar(v))
            .transpose()
            .context("StreamSpecification.StreamViewType")?,
        None => None,
    };
    let ttl_attribute = match props.get("TimeToLiveSpecification") {
        Some(spec) if r.opt_bool(spec, "Enabled")?.unwrap_or(false) => Some(
            r.string(spec, "AttributeName")
                .context("TimeToLiveSpecification")?,
        ),
        _ => None,
    };
    Ok(TableSpec {
        logical_id: id.to_string(),
        key_schema: r.key_schema(props)?,
        attribute_definitions,
        global_secondary_indexes,
        local_secondary_indexes,
        stream_view_type,
        ttl_attribute,
    })
}

fn parse_queue(id: &str, props: &Value, r: &Resolver<'_>) -> Result<QueueSpec> {
    let redrive = match props.get("RedrivePolicy") {
        None => None,
        Some(policy) => {
            let target = policy
                .get("deadLetterTargetArn")
                .ok_or_else(|| anyhow!("RedrivePolicy: missing deadLetterTargetArn"))?;
            let dead_letter_logical_id = match intrinsic(target) {
                Some(Intrinsic::GetAtt(arg)) => {
                    let (target_id, attr) = get_att_target(arg)?;
                    if attr != "Arn" {
                        bail!("RedrivePolicy.deadLetterTargetArn: expected !GetAtt {target_id}.Arn, found attribute {attr}");
                    }
                    target_id
                }
                _ => bail!(
                    "RedrivePolicy.deadLetterTargetArn must be !GetAtt <Queue>.Arn of a queue in this template, found {target:?}"
                ),
            };
            let max_receive_count = r
                .opt_int(policy, "maxReceiveCount")
                .context("RedrivePolicy")?
                .ok_or_else(|| anyhow!("RedrivePolicy: missing maxReceiveCount"))?;
            Some(RedriveSpec {
                dead_letter_logical_id,
                max_receive_count,
            })
        }
    };
    Ok(QueueSpec {
        logical_id: id.to_string(),
        visibility_timeout: r.opt_int(props, "VisibilityTimeout")?,
        message_retention_period: r.opt_int(props, "MessageRetentionPeriod")?,
        delay_seconds: r.opt_int(props, "DelaySeconds")?,
        receive_message_wait_time_seconds: r.opt_int(props, "ReceiveMessageWaitTimeSeconds")?,
        maximum_message_size: r.opt_int(props, "MaximumMessageSize")?,
        fifo_queue: r.opt_bool(props, "FifoQueue")?.unwrap_or(false),
        content_based_deduplication: r
            .opt_bool(props, "ContentBasedDeduplication")?
            .unwrap_or(false),
        redrive,
    })
}

/// `!GetAtt <id>.Arn` (short or long form) -> `<id>`.
fn get_att_arn_target(value: &Value, what: &str) -> Result<String> {
    match intrinsic(value) {
        Some(Intrinsic::GetAtt(arg)) => {
            let (target_id, attr) = get_att_target(arg)?;
            if attr != "Arn" {
                bail!("{what}: expected !GetAtt {target_id}.Arn, found attribute {attr}");
            }
            Ok(target_id)
        }
        _ => bail!("{what} must be !GetAtt <LogicalId>.Arn of a resource in this template, found {value:?}"),
    }
}

fn parse_bucket(id: &str, props: &Value, r: &Resolver<'_>) -> Result<BucketSpec> {
    let encryption = match props.get("BucketEncryption") {
        None => None,
        Some(encryption) => {
            let rules = r
                .list(encryption, "ServerSideEncryptionConfiguration")
                .context("BucketEncryption")?;
            match rules.first() {
                None => None,
                Some(rule) => {
                    let default = rule.get("ServerSideEncryptionByDefault").ok_or_else(|| {
                        anyhow!("BucketEncryption: missing ServerSideEncryptionByDefault")
                    })?;
                    Some(BucketEncryptionSpec {
                        sse_algorithm: r
                            .string(default, "SSEAlgorithm")
                            .context("BucketEncryption")?,
                        kms_master_key_id: default
                            .get("KMSMasterKeyID")
                            .and_then(|v| r.scalar(v).ok()),
                        bucket_key_enabled: r
                            .opt_bool(rule, "BucketKeyEnabled")
                            .context("BucketEncryption")?,
                    })
                }
            }
        }
    };
    let public_access_block = props
        .get("PublicAccessBlockConfiguration")
        .map(|block| -> Result<PublicAccessBlockSpec> {
            let flag = |key| -> Result<bool> { Ok(r.opt_bool(block, key)?.unwrap_or(false)) };
            Ok(PublicAccessBlockSpec {
                block_public_acls: flag("BlockPublicAcls")?,
                block_public_policy: flag("BlockPublicPolicy")?,
                ignore_public_acls: flag("IgnorePublicAcls")?,
                restrict_public_buckets: flag("RestrictPublicBuckets")?,
            })
        })
        .transpose()
        .context("PublicAccessBlockConfiguration")?;
    let lifecycle_rules = match props.get("LifecycleConfiguration") {
        None => Vec::new(),
        Some(lifecycle) => r
            .list(lifecycle, "Rules")?
            .iter()
            .enumerate()
            .map(|(i, rule)| parse_lifecycle_rule(rule, r).with_context(|| format!("rule {i}")))
            .collect::<Result<Vec<_>>>()
            .context("LifecycleConfiguration")?,
    };
    let versioning = match props.get("VersioningConfiguration") {
        None => None,
        Some(v) => Some(r.string(v, "Status").context("VersioningConfiguration")?),
    };
    Ok(BucketSpec {
        logical_id: id.to_string(),
        encryption,
        public_access_block,
        lifecycle_rules,
        versioning,
    })
}

fn parse_lifecycle_rule(rule: &Value, r: &Resolver<'_>) -> Result<LifecycleRuleSpec> {
    let status = r.string(rule, "Status")?;
    let enabled = match status.as_str() {
        "Enabled" => true,
        "Disabled" => false,
        other => bail!("Status: {other:?} is neither Enabled nor Disabled"),
    };
    let noncurrent = match rule.get("NoncurrentVersionExpiration") {
        Some(v) => r
            .opt_int(v, "NoncurrentDays")
            .context("NoncurrentVersionExpiration")?,
        None => r.opt_int(rule, "NoncurrentVersionExpirationInDays")?,
    };
    let abort = match rule.get("AbortIncompleteMultipartUpload") {
        Some(v) => r
            .opt_int(v, "DaysAfterInitiation")
            .context("AbortIncompleteMultipartUpload")?,
        None => None,
    };
    let mut transitions = r
        .list(rule, "Transitions")?
        .iter()
        .map(|t| {
            Ok(TransitionSpec {
                storage_class: r.string(t, "StorageClass")?,
                transition_in_days: r
                    .opt_int(t, "TransitionInDays")?
                    .ok_or_else(|| anyhow!("only TransitionInDays is supported"))?,
            })
        })
        .collect::<Result<Vec<_>>>()
        .context("Transitions")?;
    if let Some(t) = rule.get("Transition") {
        transitions.push(TransitionSpec {
            storage_class: r.string(t, "StorageClass").context("Transition")?,
            transition_in_days: r
                .opt_int(t, "TransitionInDays")
                .context("Transition")?
                .ok_or_else(|| anyhow!("Transition: only TransitionInDays is supported"))?,
        });
    }
    Ok(LifecycleRuleSpec {
        id: r.opt_string(rule, "Id")?,
        enabled,
        prefix: r.opt_string(rule, "Prefix")?,
        expiration_in_days: r.opt_int(rule, "ExpirationInDays")?,
        noncurrent_version_expiration_in_days: noncurrent,
        abort_incomplete_multipart_upload_days: abort,
        transitions,
    })
}

fn parse_delivery_stream(id: &str, props: &Value, r: &Resolver<'_>) -> Result<DeliveryStreamSpec> {
    if let Some(kind) = r.opt_string(props, "DeliveryStreamType")? {
        if kind != "DirectPut" {
            bail!("DeliveryStreamType {kind}: only DirectPut is emulated locally");
        }
    }
    let (key, extended) = if props.get("ExtendedS3DestinationConfiguration").is_some() {
        ("ExtendedS3DestinationConfiguration", true)
    } else if props.get("S3DestinationConfiguration").is_some() {
        ("S3DestinationConfiguration", false)
    } else {
        bail!("only ExtendedS3DestinationConfiguration and S3DestinationConfiguration destinations are emulated locally");
    };
    let destination = props.get(key).ok_or_else(|| anyhow!("missing {key}"))?;
    let parse = || -> Result<DeliveryStreamSpec> {
        let bucket_arn = destination
            .get("BucketARN")
            .ok_or_else(|| anyhow!("missing BucketARN"))?;
        let hints = destination.get("BufferingHints");
        let hint = |name| -> Result<Option<i32>> {
            match hints {
                Some(h) => r.opt_int(h, name).context("BufferingHints"),
                None => Ok(None),
            }
        };
        Ok(DeliveryStreamSpec {
            logical_id: id.to_string(),
            bucket_logical_id: get_att_arn_target(bucket_arn, "BucketARN")?,
            extended,
            prefix: r.opt_string(destination, "Prefix")?,
            error_output_prefix: r.opt_string(destination, "ErrorOutputPrefix")?,
            buffering_interval_seconds: hint("IntervalInSeconds")?,
            buffering_size_mb: hint("SizeInMBs")?,
            compression_format: r.opt_string(destination, "CompressionFormat")?,
            role_arn: destination.get("RoleARN").and_then(|v| r.scalar(v).ok()),
        })
    };
    parse().context(key)
}
