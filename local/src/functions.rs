//! The template's `AWS::Serverless::Function` resources as the local stack runs them: binary,
//! timeout, memory, environment (resolved against the local resources) and event sources.

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use serde_json::Value as Json;
use serde_yaml::{Mapping, Value};

use crate::template::{get_att_target, intrinsic, literal, Intrinsic};

#[derive(Debug, Clone, PartialEq)]
pub struct FunctionDef {
    pub logical_id: String,
    /// `Metadata.BuildProperties.Binary` (cargo-lambda), else the logical id.
    pub binary: String,
    pub timeout: Duration,
    pub memory_mb: u32,
    /// `ReservedConcurrentExecutions`, raw (often an `!If`); see [`reserved_concurrency`].
    pub reserved_concurrency: Option<Value>,
    /// Raw values; resolve with [`resolve`] once the resources exist.
    pub environment: Vec<(String, Value)>,
    pub events: Vec<EventDef>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum EventDef {
    HttpApi {
        name: String,
        method: String,
        path: String,
    },
    Sqs(SqsEventDef),
    DynamoDb(StreamEventDef),
    Schedule(ScheduleEventDef),
}

#[derive(Debug, Clone, PartialEq)]
pub struct SqsEventDef {
    pub name: String,
    pub queue_logical_id: String,
    pub batch_size: i32,
    pub batching_window: Duration,
    pub report_batch_item_failures: bool,
    /// `ScalingConfig.MaximumConcurrency` (2..=1000); `None`: as many as the function allows.
    pub maximum_concurrency: Option<u32>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct StreamEventDef {
    pub name: String,
    pub table_logical_id: String,
    pub starting_position: String,
    pub batch_size: i32,
    pub batching_window: Duration,
    pub tumbling_window: Option<Duration>,
    pub bisect_on_error: bool,
    /// -1 = infinite (until the record expires), as in Lambda.
    pub maximum_retry_attempts: i64,
    pub report_batch_item_failures: bool,
    pub on_failure_queue_logical_id: Option<String>,
    /// `ParallelizationFactor` (1..=10): batches of one shard processed at once.
    pub parallelization_factor: u32,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ScheduleEventDef {
    pub name: String,
    pub expression: String,
    pub input: Option<Json>,
    pub enabled: bool,
}

/// Reads every serverless function of the template, with `Globals.Function` applied.
pub fn load(path: &Path) -> Result<Vec<FunctionDef>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    parse(&text).with_context(|| format!("in template {}", path.display()))
}

pub fn parse(text: &str) -> Result<Vec<FunctionDef>> {
    let doc: Value = serde_yaml::from_str(text).context("parsing YAML")?;
    let empty = Value::Mapping(Mapping::new());
    let globals = doc
        .get("Globals")
        .and_then(|g| g.get("Function"))
        .unwrap_or(&empty);
    let parameters: HashMap<String, String> = doc
        .get("Parameters")
        .and_then(Value::as_mapping)
        .into_iter()
        .flatten()
        .filter_map(|(k, v)| Some((k.as_str()?.to_owned(), literal(v.get("Default")?)?)))
        .collect();
    let resources = doc
        .get("Resources")
        .and_then(Value::as_mapping)
        .ok_or_else(|| anyhow!("no Resources"))?;
    let mut functions = Vec::new();
    for (id, resource) in resources {
        if resource.get("Type").and_then(Value::as_str) != Some("AWS::Serverless::Function") {
            continue;
        }
        let id = id
            .as_str()
            .ok_or_else(|| anyhow!("non-string logical id"))?;
        functions.push(
            function(id, resource, globals, &parameters)
                .with_context(|| format!("function {id}"))?,
        );
    }
    functions.sort_by(|a, b| a.logical_id.cmp(&b.logical_id));
    Ok(functions)
}

fn function(
    id: &str,
    resource: &Value,
    globals: &Value,
    parameters: &HashMap<String, String>,
) -> Result<FunctionDef> {
    let empty = Value::Mapping(Mapping::new());
    let props = resource.get("Properties").unwrap_or(&empty);
    let setting = |key: &str| props.get(key).or_else(|| globals.get(key));
    let number = |key: &str, default: u64| -> Result<u64> {
        match setting(key) {
            None => Ok(default),
            Some(v) => literal(v)
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| anyhow!("{key} must be a number")),
        }
    };
    let binary = resource
        .get("Metadata")
        .and_then(|m| m.get("BuildProperties"))
        .and_then(|b| b.get("Binary"))
        .and_then(Value::as_str)
        .unwrap_or(id)
        .to_owned();
    // Function variables override global ones of the same name.
    let mut environment: Vec<(String, Value)> = Vec::new();
    for source in [globals, props] {
        let vars = source
            .get("Environment")
            .and_then(|e| e.get("Variables"))
            .and_then(Value::as_mapping);
        for (k, v) in vars.into_iter().flatten() {
            let k = k
                .as_str()
                .ok_or_else(|| anyhow!("non-string variable name"))?
                .to_owned();
            environment.retain(|(name, _)| *name != k);
            environment.push((k, v.clone()));
        }
    }
    let mut events = Vec::new();
    for (name, event) in props
        .get("Events")
        .and_then(Value::as_mapping)
        .into_iter()
        .flatten()
    {
        let name = name.as_str().unwrap_or_default().to_owned();
        if let Some(e) =
            event_def(&name, event, parameters).with_context(|| format!("event {name}"))?
        {
            events.push(e);
        }
    }
    Ok(FunctionDef {
        logical_id: id.to_owned(),
        binary,
        timeout: Duration::from_secs(number("Timeout", 3)?),
        memory_mb: number("MemorySize", 128)? as u32,
        reserved_concurrency: setting("ReservedConcurrentExecutions").cloned(),
        environment,
        events,
    })
}

fn event_def(
    name: &str,
    event: &Value,
    parameters: &HashMap<String, String>,
) -> Result<Option<EventDef>> {
    let empty = Value::Mapping(Mapping::new());
    let p = event.get("Properties").unwrap_or(&empty);
    // A literal, or `!Ref` to a parameter (its default).
    let text = |key: &str| {
        let v = p.get(key)?;
        literal(v).or_else(|| match intrinsic(v) {
            Some(Intrinsic::Ref(arg)) => parameters.get(arg.as_str()?).cloned(),
            _ => None,
        })
    };
    let int = |key: &str, default: i64| -> i64 {
        text(key).and_then(|s| s.parse().ok()).unwrap_or(default)
    };
    let flag = |key: &str, default: bool| -> bool { text(key).map_or(default, |s| s == "true") };
    let reports_failures = p
        .get("FunctionResponseTypes")
        .and_then(Value::as_sequence)
        .is_some_and(|types| {
            types
                .iter()
                .any(|t| t.as_str() == Some("ReportBatchItemFailures"))
        });
    let target = |key: &str| -> Result<String> {
        let v = p.get(key).ok_or_else(|| anyhow!("{key} is required"))?;
        match intrinsic(v) {
            Some(Intrinsic::GetAtt(arg)) => Ok(get_att_target(arg)?.0),
            Some(Intrinsic::Ref(arg)) => arg
                .as_str()
                .map(str::to_owned)
                .ok_or_else(|| anyhow!("bad Ref")),
            _ => bail!("{key} must be !GetAtt or !Ref of a resource of this template"),
        }
    };
    Ok(Some(match event.get("Type").and_then(Value::as_str) {
        Some("HttpApi") => EventDef::HttpApi {
            name: name.to_owned(),
            method: text("Method")
                .unwrap_or_else(|| "ANY".into())
                .to_ascii_uppercase(),
            path: text("Path").unwrap_or_else(|| "$default".into()),
        },
        Some("SQS") => EventDef::Sqs(SqsEventDef {
            name: name.to_owned(),
            queue_logical_id: target("Queue")?,
            batch_size: int("BatchSize", 10) as i32,
            batching_window: Duration::from_secs(int("MaximumBatchingWindowInSeconds", 0) as u64),
            report_batch_item_failures: reports_failures,
            maximum_concurrency: p
                .get("ScalingConfig")
                .and_then(|c| c.get("MaximumConcurrency"))
                .and_then(|v| {
                    literal(v).or_else(|| match intrinsic(v) {
                        Some(Intrinsic::Ref(arg)) => parameters.get(arg.as_str()?).cloned(),
                        _ => None,
                    })
                })
                .and_then(|s| s.parse().ok()),
        }),
        Some("DynamoDB") => EventDef::DynamoDb(StreamEventDef {
            name: name.to_owned(),
            table_logical_id: target("Stream")?,
            starting_position: text("StartingPosition").unwrap_or_else(|| "LATEST".into()),
            batch_size: int("BatchSize", 100) as i32,
            batching_window: Duration::from_secs(int("MaximumBatchingWindowInSeconds", 0) as u64),
            tumbling_window: text("TumblingWindowInSeconds")
                .and_then(|s| s.parse().ok())
                .map(Duration::from_secs),
            bisect_on_error: flag("BisectBatchOnFunctionError", false),
            maximum_retry_attempts: int("MaximumRetryAttempts", -1),
            report_batch_item_failures: reports_failures,
            on_failure_queue_logical_id: p
                .get("DestinationConfig")
                .and_then(|d| d.get("OnFailure"))
                .and_then(|o| o.get("Destination"))
                .and_then(|v| match intrinsic(v) {
                    Some(Intrinsic::GetAtt(arg)) => get_att_target(arg).ok().map(|t| t.0),
                    _ => None,
                }),
            parallelization_factor: int("ParallelizationFactor", 1).clamp(1, 10) as u32,
        }),
        Some("Schedule") | Some("ScheduleV2") => EventDef::Schedule(ScheduleEventDef {
            name: text("Name").unwrap_or_else(|| name.to_owned()),
            expression: text("Schedule")
                .or_else(|| text("ScheduleExpression"))
                .ok_or_else(|| anyhow!("Schedule expression is required"))?,
            input: text("Input")
                .map(|s| serde_json::from_str(&s))
                .transpose()
                .context("Input must be JSON")?,
            enabled: text("State").map_or_else(|| flag("Enabled", true), |s| s == "ENABLED"),
        }),
        _ => return Ok(None),
    }))
}

/// What a `!Ref`/`!GetAtt`/`!Sub` in an environment variable means locally.
pub struct LocalResources<'a> {
    pub parameters: &'a HashMap<String, String>,
    /// Logical id → value of `!Ref` (table name, queue URL, ...).
    pub refs: &'a HashMap<String, String>,
    /// (logical id, attribute) → value of `!GetAtt`.
    pub attributes: &'a HashMap<(String, String), String>,
}

/// Resolves one environment value against the local resources.
pub fn resolve(value: &Value, resources: &LocalResources<'_>) -> Result<String> {
    if let Some(s) = literal(value) {
        return Ok(s);
    }
    let reference = |name: &str| -> Result<String> {
        resources
            .parameters
            .get(name)
            .or_else(|| resources.refs.get(name))
            .cloned()
            .or_else(|| pseudo(name))
            .ok_or_else(|| anyhow!("!Ref {name}: unknown locally"))
    };
    match intrinsic(value) {
        Some(Intrinsic::Ref(arg)) => reference(arg.as_str().ok_or_else(|| anyhow!("bad !Ref"))?),
        Some(Intrinsic::GetAtt(arg)) => {
            let target = get_att_target(arg)?;
            resources
                .attributes
                .get(&target)
                .cloned()
                .ok_or_else(|| anyhow!("!GetAtt {}.{}: unknown locally", target.0, target.1))
        }
        Some(Intrinsic::Sub(arg)) => {
            let mut text = arg
                .as_str()
                .ok_or_else(|| anyhow!("only the string form of !Sub is supported"))?
                .to_owned();
            while let Some(start) = text.find("${") {
                let end = text[start..]
                    .find('}')
                    .map(|e| start + e)
                    .ok_or_else(|| anyhow!("unclosed ${{ in !Sub"))?;
                let name = text[start + 2..end].to_owned();
                let value = match name.split_once('.') {
                    Some((id, attr)) => resources
                        .attributes
                        .get(&(id.to_owned(), attr.to_owned()))
                        .cloned()
                        .ok_or_else(|| anyhow!("${{{name}}}: unknown locally"))?,
                    None => reference(&name)?,
                };
                text.replace_range(start..=end, &value);
            }
            Ok(text)
        }
        _ => bail!("unsupported environment value {value:?}"),
    }
}

/// `ReservedConcurrentExecutions` under the stack's parameters: a number, a `!Ref` to a
/// parameter, or an `!If` on one of the template's `conditions` whose branch may be
/// `!Ref AWS::NoValue` (then `None`: nothing reserved).
pub fn reserved_concurrency(
    def: &FunctionDef,
    conditions: Option<&Mapping>,
    resources: &LocalResources<'_>,
) -> Result<Option<u32>> {
    let Some(value) = &def.reserved_concurrency else {
        return Ok(None);
    };
    let Some(value) = chosen(value, conditions, resources)? else {
        return Ok(None);
    };
    let text = resolve(value, resources).context("ReservedConcurrentExecutions")?;
    let reserved = text
        .parse()
        .with_context(|| format!("ReservedConcurrentExecutions {text:?} is not a number"))?;
    Ok(Some(reserved))
}

/// A property's value under the stack's conditions: an `!If`'s chosen branch, and `None` for
/// `!Ref AWS::NoValue` (the property is absent).
pub fn chosen<'v>(
    value: &'v Value,
    conditions: Option<&Mapping>,
    resources: &LocalResources<'_>,
) -> Result<Option<&'v Value>> {
    let mut value = value;
    if let Value::Tagged(tagged) = value {
        if tagged.tag == "If" {
            let branches = tagged
                .value
                .as_sequence()
                .filter(|b| b.len() == 3)
                .ok_or_else(|| anyhow!("!If takes a condition and two values"))?;
            let name = branches[0]
                .as_str()
                .ok_or_else(|| anyhow!("!If names a condition"))?;
            let condition = conditions
                .and_then(|c| c.get(name))
                .ok_or_else(|| anyhow!("condition {name} is not declared"))?;
            value = if crate::events::evaluate(condition, resources)? {
                &branches[1]
            } else {
                &branches[2]
            };
        }
    }
    if let Some(Intrinsic::Ref(arg)) = intrinsic(value) {
        if arg.as_str() == Some("AWS::NoValue") {
            return Ok(None);
        }
    }
    Ok(Some(value))
}

fn pseudo(name: &str) -> Option<String> {
    let value = match name {
        "AWS::Region" => crate::REGION,
        "AWS::AccountId" => "123456789012",
        "AWS::Partition" => "aws",
        "AWS::URLSuffix" => "amazonaws.com",
        "AWS::StackName" => "tally-local",
        _ => return None,
    };
    Some(value.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_project_template() -> Result<()> {
        let functions = load(&crate::repo_root().join("template.yaml"))?;
        let ingest = functions
            .iter()
            .find(|f| f.logical_id == "IngestFunction")
            .ok_or_else(|| anyhow!("ingest"))?;
        assert_eq!(ingest.binary, "ingest");
        assert_eq!(ingest.timeout, Duration::from_secs(30));
        assert_eq!(ingest.memory_mb, 256);
        assert!(ingest.events.contains(&EventDef::HttpApi {
            name: "GenericWebhook".into(),
            method: "POST".into(),
            path: "/v1/webhooks/{source}".into()
        }));
        let names: Vec<&str> = ingest.environment.iter().map(|(k, _)| k.as_str()).collect();
        assert!(names.contains(&"RUST_LOG") && names.contains(&"WORK_QUEUE_URL"));
        let process = functions
            .iter()
            .find(|f| f.logical_id == "ProcessFunction")
            .ok_or_else(|| anyhow!("process"))?;
        assert_eq!(process.timeout, Duration::from_secs(60));
        let Some(EventDef::Sqs(sqs)) = process.events.first() else {
            bail!("process has no SQS event")
        };
        assert_eq!(
            (
                sqs.queue_logical_id.as_str(),
                sqs.batch_size,
                sqs.report_batch_item_failures
            ),
            ("WorkQueue", 10, true)
        );
        assert_eq!(sqs.batching_window, Duration::from_secs(1));
        assert_eq!(
            sqs.maximum_concurrency,
            Some(10),
            "ProcessMaximumConcurrency"
        );
        Ok(())
    }

    #[test]
    fn reserved_concurrency_follows_the_conditions_and_parameters() -> Result<()> {
        let text = std::fs::read_to_string(crate::repo_root().join("template.yaml"))?;
        let functions = parse(&text)?;
        let doc: Value = serde_yaml::from_str(&text)?;
        let conditions = doc.get("Conditions").and_then(Value::as_mapping);
        let ingest = functions
            .iter()
            .find(|f| f.logical_id == "IngestFunction")
            .ok_or_else(|| anyhow!("ingest"))?;
        let reserved = |value: &str| -> Result<Option<u32>> {
            let parameters =
                HashMap::from([("IngestReservedConcurrency".to_owned(), value.to_owned())]);
            let empty = HashMap::new();
            let attributes = HashMap::new();
            let resources = LocalResources {
                parameters: &parameters,
                refs: &empty,
                attributes: &attributes,
            };
            reserved_concurrency(ingest, conditions, &resources)
        };
        // 0 reserves nothing (`!Ref AWS::NoValue`); any other value is the limit.
        assert_eq!(reserved("0")?, None);
        assert_eq!(reserved("7")?, Some(7));
        let console = functions
            .iter()
            .find(|f| f.logical_id == "ConsoleFunction")
            .ok_or_else(|| anyhow!("console"))?;
        assert_eq!(console.reserved_concurrency, None);
        Ok(())
    }

    #[test]
    fn resolves_refs_getatts_and_subs() -> Result<()> {
        let parameters = HashMap::from([("LogLevel".to_owned(), "debug".to_owned())]);
        let refs = HashMap::from([("WorkQueue".to_owned(), "http://q".to_owned())]);
        let attributes = HashMap::from([(
            ("WorkQueue".to_owned(), "Arn".to_owned()),
            "arn:q".to_owned(),
        )]);
        let r = LocalResources {
            parameters: &parameters,
            refs: &refs,
            attributes: &attributes,
        };
        let yaml = |s: &str| -> Result<Value> { Ok(serde_yaml::from_str(s)?) };
        assert_eq!(resolve(&yaml("!Ref LogLevel")?, &r)?, "debug");
        assert_eq!(resolve(&yaml("!Ref WorkQueue")?, &r)?, "http://q");
        assert_eq!(resolve(&yaml("!GetAtt WorkQueue.Arn")?, &r)?, "arn:q");
        assert_eq!(
            resolve(&yaml("!Sub '${WorkQueue.Arn}/x/${AWS::Region}'")?, &r)?,
            "arn:q/x/us-east-1"
        );
        assert_eq!(resolve(&yaml("30")?, &r)?, "30");
        assert!(resolve(&yaml("!Ref Nope")?, &r).is_err());
        Ok(())
    }

    #[test]
    fn schedules_and_streams_are_read() -> Result<()> {
        let text = r#"
Resources:
  Fn:
    Type: AWS::Serverless::Function
    Properties:
      Events:
        Hourly:
          Type: Schedule
          Properties:
            Schedule: rate(1 hour)
            Input: '{"task": "reconcile"}'
        Stream:
          Type: DynamoDB
          Properties:
            Stream: !GetAtt T.StreamArn
            StartingPosition: TRIM_HORIZON
            BatchSize: 500
            TumblingWindowInSeconds: 60
            BisectBatchOnFunctionError: true
            MaximumRetryAttempts: 3
            DestinationConfig:
              OnFailure:
                Destination: !GetAtt Dlq.Arn
"#;
        let f = parse(text)?;
        let events = &f[0].events;
        assert!(events.iter().any(|e| matches!(e, EventDef::Schedule(s) if s.expression == "rate(1 hour)" && s.input == Some(serde_json::json!({"task": "reconcile"})))));
        let stream = events.iter().find_map(|e| match e {
            EventDef::DynamoDb(s) => Some(s),
            _ => None,
        });
        let stream = stream.ok_or_else(|| anyhow!("no stream"))?;
        assert_eq!(stream.table_logical_id, "T");
        assert_eq!(stream.tumbling_window, Some(Duration::from_secs(60)));
        assert_eq!(
            (stream.bisect_on_error, stream.maximum_retry_attempts),
            (true, 3)
        );
        assert_eq!(stream.on_failure_queue_logical_id.as_deref(), Some("Dlq"));
        Ok(())
    }
}
