//! Rules `template.yaml` must keep that no emulator can check: alarms that can notify, stateful
//! resources that outlive the stack, and the narrowest writes of the functions on the hot path.
//! Each rule reads the template itself, so a later edit that breaks one fails here.

use anyhow::{bail, Context, Result};
use serde_yaml::{Mapping, Value};

fn template() -> Result<Mapping> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../template.yaml");
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {path}"))?;
    let doc: Value = serde_yaml::from_str(&text)?;
    doc.get("Resources")
        .and_then(Value::as_mapping)
        .cloned()
        .context("template has no Resources")
}

fn resources_of<'t>(resources: &'t Mapping, kind: &str) -> Vec<(&'t str, &'t Value)> {
    resources
        .iter()
        .filter(|(_, r)| r.get("Type").and_then(Value::as_str) == Some(kind))
        .filter_map(|(id, r)| Some((id.as_str()?, r)))
        .collect()
}

/// The logical id a `!Ref X`, `!GetAtt X.Arn` or their long forms point at.
fn target(value: &Value) -> Option<&str> {
    match value {
        Value::Tagged(tagged) if tagged.tag == "Ref" => tagged.value.as_str(),
        Value::Tagged(tagged) if tagged.tag == "GetAtt" => match &tagged.value {
            Value::String(s) => s.split('.').next(),
            Value::Sequence(parts) => parts.first().and_then(Value::as_str),
            _ => None,
        },
        Value::Mapping(m) => {
            m.get("Ref")
                .and_then(Value::as_str)
                .or_else(|| match m.get("Fn::GetAtt") {
                    Some(Value::Sequence(parts)) => parts.first().and_then(Value::as_str),
                    Some(Value::String(s)) => s.split('.').next(),
                    _ => None,
                })
        }
        _ => None,
    }
}

fn strings(value: Option<&Value>) -> Vec<&str> {
    match value {
        Some(Value::String(s)) => vec![s.as_str()],
        Some(Value::Sequence(items)) => items.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    }
}

/// Whether a key policy lets CloudWatch encrypt messages for the topic (what an alarm's publish
/// to an encrypted topic needs).
fn admits_cloudwatch(key: &Value) -> bool {
    let statements = key
        .get("Properties")
        .and_then(|p| p.get("KeyPolicy"))
        .and_then(|p| p.get("Statement"))
        .and_then(Value::as_sequence);
    statements.into_iter().flatten().any(|s| {
        let allows = s.get("Effect").and_then(Value::as_str) == Some("Allow");
        let cloudwatch = strings(s.get("Principal").and_then(|p| p.get("Service")))
            .contains(&"cloudwatch.amazonaws.com");
        let actions = strings(s.get("Action"));
        let grants = |needed: &str| {
            actions.iter().any(|a| {
                *a == "kms:*"
                    || *a == needed
                    || (a.ends_with('*') && needed.starts_with(a.trim_end_matches('*')))
            })
        };
        allows && cloudwatch && grants("kms:Decrypt") && grants("kms:GenerateDataKey")
    })
}

/// Why a topic an alarm notifies could not take its messages, if it could not.
fn topic_problem(resources: &Mapping, topic_id: &str) -> Option<String> {
    let topic = resources.get(topic_id)?;
    let Some(key) = topic
        .get("Properties")
        .and_then(|p| p.get("KmsMasterKeyId"))
    else {
        return None; // unencrypted topics accept CloudWatch's publishes
    };
    let Some(key_id) = target(key) else {
        return Some(format!(
            "{topic_id} is encrypted with {key:?}, a key outside the template (the AWS-managed \
             alias/aws/sns refuses CloudWatch)"
        ));
    };
    let key_id = match resources
        .get(key_id)
        .and_then(|k| k.get("Type"))
        .and_then(Value::as_str)
    {
        Some("AWS::KMS::Alias") => resources
            .get(key_id)
            .and_then(|a| a.get("Properties"))
            .and_then(|p| p.get("TargetKeyId"))
            .and_then(target)
            .unwrap_or(key_id),
        _ => key_id,
    };
    match resources.get(key_id) {
        Some(k) if admits_cloudwatch(k) => None,
        Some(_) => Some(format!(
            "{topic_id}'s key {key_id} does not allow cloudwatch.amazonaws.com kms:Decrypt and kms:GenerateDataKey*"
        )),
        None => Some(format!("{topic_id}'s key {key_id} is not in the template")),
    }
}

#[test]
fn every_alarm_can_publish_to_its_topics() -> Result<()> {
    let resources = template()?;
    let alarms = resources_of(&resources, "AWS::CloudWatch::Alarm");
    assert!(alarms.len() >= 5, "the template's alarms: {}", alarms.len());
    let mut problems = Vec::new();
    for (id, alarm) in alarms {
        let props = alarm.get("Properties").context("alarm properties")?;
        let actions: Vec<&Value> = ["AlarmActions", "OKActions", "InsufficientDataActions"]
            .iter()
            .filter_map(|k| props.get(*k).and_then(Value::as_sequence))
            .flatten()
            .collect();
        if actions.is_empty() {
            problems.push(format!("{id} notifies nobody"));
        }
        for action in actions {
            let Some(topic) = target(action) else {
                problems.push(format!(
                    "{id} notifies {action:?}, not a topic of the template"
                ));
                continue;
            };
            if let Some(problem) = topic_problem(&resources, topic) {
                problems.push(format!("{id}: {problem}"));
            }
        }
    }
    problems.dedup();
    assert!(problems.is_empty(), "{problems:#?}");
    Ok(())
}

#[test]
fn the_rule_refuses_the_aws_managed_sns_key_and_keys_without_cloudwatch() -> Result<()> {
    let managed: Mapping = serde_yaml::from_str(
        "T: {Type: AWS::SNS::Topic, Properties: {KmsMasterKeyId: alias/aws/sns}}",
    )?;
    assert!(topic_problem(&managed, "T").is_some());
    let closed: Mapping = serde_yaml::from_str(
        "T: {Type: AWS::SNS::Topic, Properties: {KmsMasterKeyId: {Ref: K}}}\n\
         K: {Type: AWS::KMS::Key, Properties: {KeyPolicy: {Statement: [{Effect: Allow, Principal: {Service: sns.amazonaws.com}, Action: 'kms:*'}]}}}",
    )?;
    assert!(topic_problem(&closed, "T").is_some());
    let open: Mapping = serde_yaml::from_str(
        "T: {Type: AWS::SNS::Topic, Properties: {KmsMasterKeyId: {Ref: K}}}\n\
         K: {Type: AWS::KMS::Key, Properties: {KeyPolicy: {Statement: [{Effect: Allow, Principal: {Service: cloudwatch.amazonaws.com}, Action: ['kms:Decrypt', 'kms:GenerateDataKey*']}]}}}",
    )?;
    assert_eq!(topic_problem(&open, "T"), None);
    Ok(())
}

#[test]
fn data_outlives_the_stack() -> Result<()> {
    let resources = template()?;
    // The connections table holds open sockets only (two hours at most): nothing to keep, so it
    // is not retained, and its items must expire instead.
    type Resources<'t> = Vec<(&'t str, &'t Value)>;
    let (ephemeral, mut stateful): (Resources, Resources) =
        resources_of(&resources, "AWS::DynamoDB::Table")
            .into_iter()
            .partition(|(id, _)| *id == "ConnectionsTable");
    let tables = stateful.len();
    assert_eq!(tables, 2, "events and analytics tables");
    for (id, table) in &ephemeral {
        let ttl = table
            .get("Properties")
            .and_then(|p| p.get("TimeToLiveSpecification"))
            .and_then(|t| t.get("Enabled"))
            .and_then(Value::as_bool);
        assert_eq!(ttl, Some(true), "{id} must expire its items");
    }
    stateful.extend(resources_of(&resources, "AWS::S3::Bucket"));
    stateful.extend(
        resources
            .get("DeadLetterQueue")
            .map(|r| ("DeadLetterQueue", r)),
    );
    assert_eq!(stateful.len(), tables + 2, "the archive bucket and the DLQ");
    let mut problems = Vec::new();
    for (id, resource) in &stateful {
        for policy in ["DeletionPolicy", "UpdateReplacePolicy"] {
            if resource.get(policy).and_then(Value::as_str) != Some("Retain") {
                problems.push(format!("{id}: {policy} is not Retain"));
            }
        }
    }
    for (id, table) in resources_of(&resources, "AWS::DynamoDB::Table")
        .into_iter()
        .filter(|(id, _)| *id != "ConnectionsTable")
    {
        let protected = table
            .get("Properties")
            .and_then(|p| p.get("DeletionProtectionEnabled"))
            .and_then(Value::as_bool);
        if protected != Some(true) {
            problems.push(format!("{id}: DeletionProtectionEnabled is not true"));
        }
    }
    assert!(problems.is_empty(), "{problems:#?}");
    Ok(())
}

fn statements(function: &Value) -> Vec<&Value> {
    function
        .get("Properties")
        .and_then(|p| p.get("Policies"))
        .and_then(Value::as_sequence)
        .into_iter()
        .flatten()
        .filter_map(|p| p.get("Statement").and_then(Value::as_sequence))
        .flatten()
        .collect()
}

#[test]
fn ingest_and_process_write_only_the_counter_items_of_the_analytics_table() -> Result<()> {
    let resources = template()?;
    const WRITES: &[&str] = &[
        "dynamodb:PutItem",
        "dynamodb:UpdateItem",
        "dynamodb:DeleteItem",
        "dynamodb:BatchWriteItem",
        "dynamodb:*",
    ];
    for (id, counters) in [
        ("IngestFunction", vec!["COUNTERS#pipeline", "COUNTERS#http"]),
        ("ProcessFunction", vec!["COUNTERS#pipeline"]),
    ] {
        let function = resources.get(id).with_context(|| id.to_owned())?;
        let writes: Vec<&Value> = statements(function)
            .into_iter()
            .filter(|s| {
                let resources: Vec<&Value> = match s.get("Resource") {
                    Some(Value::Sequence(items)) => items.iter().collect(),
                    Some(one) => vec![one],
                    None => Vec::new(),
                };
                resources
                    .iter()
                    .any(|r| target(r) == Some("AnalyticsTable"))
                    && strings(s.get("Action")).iter().any(|a| WRITES.contains(a))
            })
            .collect();
        if writes.is_empty() {
            bail!("{id} has no write to the analytics table (its counters need one)");
        }
        for statement in writes {
            let keys = statement
                .get("Condition")
                .and_then(|c| c.get("ForAllValues:StringEquals"))
                .and_then(|c| c.get("dynamodb:LeadingKeys"));
            assert_eq!(
                strings(keys),
                counters,
                "{id} may write analytics items beyond the counters: {statement:?}"
            );
        }
    }
    Ok(())
}

#[test]
fn only_the_work_queue_may_dead_letter_into_the_dlq() -> Result<()> {
    let resources = template()?;
    let policy = resources
        .get("DeadLetterQueue")
        .and_then(|q| q.get("Properties"))
        .and_then(|p| p.get("RedriveAllowPolicy"))
        .context("DeadLetterQueue has no RedriveAllowPolicy")?;
    assert_eq!(
        policy.get("redrivePermission").and_then(Value::as_str),
        Some("byQueue")
    );
    let sources = policy
        .get("sourceQueueArns")
        .and_then(Value::as_sequence)
        .context("sourceQueueArns")?;
    assert_eq!(sources.len(), 1);
    let arn = match &sources[0] {
        Value::Tagged(t) if t.tag == "Sub" => t.value.as_str().unwrap_or_default().to_owned(),
        other => format!("{other:?}"),
    };
    let name = resources
        .get("WorkQueue")
        .and_then(|q| q.get("Properties"))
        .and_then(|p| p.get("QueueName"))
        .and_then(|n| match n {
            Value::Tagged(t) if t.tag == "Sub" => t.value.as_str(),
            other => other.as_str(),
        })
        .context("WorkQueue needs a QueueName the DLQ can name")?;
    assert!(
        arn.ends_with(&format!(":{name}")),
        "the DLQ admits {arn}, the work queue is {name}"
    );
    Ok(())
}

#[test]
fn no_function_carries_a_secret_in_its_environment() -> Result<()> {
    let resources = template()?;
    let doc: Value = serde_yaml::from_str(&std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../template.yaml"
    ))?)?;
    let no_echo: Vec<&str> = doc
        .get("Parameters")
        .and_then(Value::as_mapping)
        .into_iter()
        .flatten()
        .filter(|(_, p)| p.get("NoEcho").and_then(Value::as_bool) == Some(true))
        .filter_map(|(name, _)| name.as_str())
        .collect();
    assert!(no_echo.len() >= 5, "{no_echo:?}");
    let mut problems = Vec::new();
    let mut reading = Vec::new();
    for (id, function) in resources_of(&resources, "AWS::Serverless::Function") {
        let variables = function
            .get("Properties")
            .and_then(|p| p.get("Environment"))
            .and_then(|e| e.get("Variables"))
            .and_then(Value::as_mapping);
        for (name, value) in variables.into_iter().flatten() {
            if target(value).is_some_and(|t| no_echo.contains(&t)) {
                problems.push(format!("{id}: {name:?} is a NoEcho parameter"));
            }
            if name.as_str() == Some("SECRETS_ARN") {
                reading.push(id);
            }
        }
    }
    assert!(problems.is_empty(), "{problems:#?}");
    reading.sort_unstable();
    assert_eq!(
        reading,
        vec![
            "AdminFunction",
            "IngestFunction",
            "LiveFunction",
            "QueryFunction"
        ]
    );
    Ok(())
}

/// Every function's errors and throttles page someone: each is a metric of some alarm's metric
/// math, inside the expression the alarm watches, and no alarm passes CloudWatch's hard limit of
/// 10 metrics per metric-math alarm.
#[test]
fn every_function_is_watched_for_errors_and_throttles() -> Result<()> {
    let resources = template()?;
    let functions: Vec<&str> = resources_of(&resources, "AWS::Serverless::Function")
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    assert!(functions.len() >= 11, "{functions:?}");
    let mut watched: Vec<(&str, &str)> = Vec::new();
    for (alarm, resource) in resources_of(&resources, "AWS::CloudWatch::Alarm") {
        let Some(metrics) = resource
            .get("Properties")
            .and_then(|p| p.get("Metrics"))
            .and_then(Value::as_sequence)
        else {
            continue;
        };
        let expression = metrics
            .iter()
            .find(|m| m.get("ReturnData").and_then(Value::as_bool) == Some(true))
            .and_then(|m| m.get("Expression").and_then(Value::as_str))
            .unwrap_or_default();
        let stats: Vec<&Value> = metrics
            .iter()
            .filter(|m| m.get("MetricStat").is_some())
            .collect();
        assert!(
            stats.len() <= 10,
            "{alarm}: {} metrics, over CloudWatch's 10",
            stats.len()
        );
        for metric in stats {
            let id = metric.get("Id").and_then(Value::as_str).unwrap_or_default();
            let stat = metric.get("MetricStat").and_then(|s| s.get("Metric"));
            let name = stat
                .and_then(|m| m.get("MetricName"))
                .and_then(Value::as_str)
                .unwrap_or_default();
            let dimensions = stat
                .and_then(|m| m.get("Dimensions"))
                .and_then(Value::as_sequence);
            for dimension in dimensions.into_iter().flatten() {
                if let Some(function) = dimension.get("Value").and_then(target) {
                    if !expression.split('+').any(|term| term.trim() == id) {
                        bail!("{alarm}: {id} ({function}) is not in {expression:?}");
                    }
                    watched.push((function, name));
                }
            }
        }
    }
    let mut missing = Vec::new();
    for function in &functions {
        for metric in ["Errors", "Throttles"] {
            if !watched.contains(&(function, metric)) {
                missing.push(format!("{function} {metric}"));
            }
        }
    }
    assert!(missing.is_empty(), "not watched by any alarm: {missing:?}");
    Ok(())
}
