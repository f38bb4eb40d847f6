//! EventBridge, locally: the template's event buses, rules and API-destination targets.
//!
//! An HTTP endpoint on loopback answers `PutEvents` (AWS JSON 1.1, what the SDK sends with
//! `AWS_ENDPOINT_URL_EVENTBRIDGE`): each entry on a bus of the template gets an id and the
//! envelope EventBridge gives it (`version`, `id`, `detail-type`, `source`, `account`, `time`,
//! `region`, `resources`, `detail`); entries naming another bus, or without a source, detail
//! type or JSON-object detail, are reported failed in `FailedEntryCount` and their entry's
//! `ErrorCode`, as EventBridge does.
//!
//! Each accepted event is matched against the template's `AWS::Events::Rule`s on its bus
//! (`EventPattern`: every key of the pattern must be in the event, an array lists the values
//! allowed, an object matches the nested field) and sent to each rule's API-destination target
//! the way the template declares it: the destination's endpoint and method, its connection's API
//! key header, the target's `InputPath` (`$.detail` sends the detail alone), and its
//! `RetryPolicy` (a `2xx` is delivered; `429`, `5xx` and connection failures are retried with
//! backoff, capped at 2 s between tries locally, until `MaximumRetryAttempts` or
//! `MaximumEventAgeInSeconds`; other answers are not retried) and `DeadLetterConfig` (an event
//! not delivered goes to that queue, the envelope as the message body). Resources whose
//! `Condition` is false under the stack's parameters are left out.
//!
//! Not emulated: other target types, input transformers, archives and replays, content-based
//! filters beyond exact values, the 256 KB entry limit.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context, Result};
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::Router;
use serde_json::{json, Value};
use serde_yaml::Value as Yaml;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::functions::{resolve, LocalResources};

/// An API-destination target of a rule.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiTarget {
    pub endpoint: String,
    pub method: String,
    /// The connection's API key header, as (name, value).
    pub header: Option<(String, String)>,
    /// `InputPath: $.detail`: the detail alone, not the envelope.
    pub detail_only: bool,
    pub max_retries: u32,
    pub max_age: Duration,
    pub dead_letter_queue_url: Option<String>,
}

/// A rule on one of the template's buses.
#[derive(Debug, Clone, PartialEq)]
pub struct EventRule {
    pub name: String,
    pub bus: String,
    pub pattern: Value,
    pub targets: Vec<ApiTarget>,
}

/// What the template declares: bus logical id → name, and the rules.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EventConfig {
    pub buses: HashMap<String, String>,
    pub rules: Vec<EventRule>,
}

/// Reads the template's buses and rules. `queue_urls` maps a queue's ARN to its URL (the
/// dead-letter queues).
pub fn parse(
    template_text: &str,
    resources: &LocalResources<'_>,
    queue_urls: &HashMap<String, String>,
) -> Result<EventConfig> {
    let doc: Yaml = serde_yaml::from_str(template_text)?;
    let empty = serde_yaml::Mapping::new();
    let all = doc
        .get("Resources")
        .and_then(Yaml::as_mapping)
        .unwrap_or(&empty);
    let conditions = doc.get("Conditions").and_then(Yaml::as_mapping);
    let included = |resource: &Yaml| -> Result<bool> {
        match resource.get("Condition").and_then(Yaml::as_str) {
            None => Ok(true),
            Some(name) => {
                let condition = conditions
                    .and_then(|c| c.get(name))
                    .ok_or_else(|| anyhow!("condition {name} is not declared"))?;
                evaluate(condition, resources)
            }
        }
    };
    let typed = |kind: &'static str| {
        all.iter().filter_map(move |(id, r)| {
            let id = id.as_str()?;
            (r.get("Type").and_then(Yaml::as_str) == Some(kind)).then_some((id, r))
        })
    };
    let mut config = EventConfig::default();
    for (id, bus) in typed("AWS::Events::EventBus") {
        let name = match bus.get("Properties").and_then(|p| p.get("Name")) {
            Some(name) => resolve(name, resources).with_context(|| format!("{id}: Name"))?,
            None => id.to_owned(),
        };
        config.buses.insert(id.to_owned(), name);
    }
    let mut refs: HashMap<String, String> = resources.refs.clone();
    refs.extend(config.buses.clone());
    let mut attributes = resources.attributes.clone();
    for (id, _) in typed("AWS::Events::ApiDestination").chain(typed("AWS::Events::Connection")) {
        attributes.insert((id.to_owned(), "Arn".into()), format!("local:{id}"));
    }
    for (id, _) in typed("AWS::IAM::Role") {
        attributes.insert((id.to_owned(), "Arn".into()), format!("local:{id}"));
    }
    let with_events = LocalResources {
        parameters: resources.parameters,
        refs: &refs,
        attributes: &attributes,
    };
    let property = |resource: &Yaml, name: &str| -> Option<Yaml> {
        resource
            .get("Properties")
            .and_then(|p| p.get(name))
            .cloned()
    };
    for (id, rule) in typed("AWS::Events::Rule") {
        if !included(rule)? {
            continue;
        }
        let bus = match property(rule, "EventBusName") {
            Some(bus) => {
                resolve(&bus, &with_events).with_context(|| format!("{id}: EventBusName"))?
            }
            None => "default".to_owned(),
        };
        let pattern: Value = serde_json::to_value(
            property(rule, "EventPattern").ok_or_else(|| anyhow!("{id}: no EventPattern"))?,
        )?;
        let mut targets = Vec::new();
        for target in property(rule, "Targets")
            .and_then(|t| t.as_sequence().cloned())
            .unwrap_or_default()
        {
            let arn = target
                .get("Arn")
                .ok_or_else(|| anyhow!("{id}: a target without Arn"))?;
            let destination_id = resolve(arn, &with_events)?
                .strip_prefix("local:")
                .map(str::to_owned)
                .ok_or_else(|| anyhow!("{id}: only API-destination targets are emulated"))?;
            let destination = all
                .get(destination_id.as_str())
                .ok_or_else(|| anyhow!("{id}: no resource {destination_id}"))?;
            let text = |resource: &Yaml, name: &str| -> Result<Option<String>> {
                property(resource, name)
                    .map(|v| resolve(&v, &with_events))
                    .transpose()
            };
            let endpoint = text(destination, "InvocationEndpoint")?
                .ok_or_else(|| anyhow!("{destination_id}: no InvocationEndpoint"))?;
            let method = text(destination, "HttpMethod")?.unwrap_or_else(|| "POST".into());
            let header = match property(destination, "ConnectionArn") {
                Some(arn) => {
                    let connection_id = resolve(&arn, &with_events)?
                        .trim_start_matches("local:")
                        .to_owned();
                    let connection = all.get(connection_id.as_str()).ok_or_else(|| {
                        anyhow!("{destination_id}: no connection {connection_id}")
                    })?;
                    let key = property(connection, "AuthParameters")
                        .and_then(|a| a.get("ApiKeyAuthParameters").cloned());
                    match key {
                        Some(key) => {
                            let field = |n: &str| -> Result<String> {
                                resolve(
                                    key.get(n)
                                        .ok_or_else(|| anyhow!("{connection_id}: no {n}"))?,
                                    &with_events,
                                )
                            };
                            Some((field("ApiKeyName")?, field("ApiKeyValue")?))
                        }
                        None => None,
                    }
                }
                None => None,
            };
            let retry = target.get("RetryPolicy");
            let number = |name: &str, default: u64| {
                retry
                    .and_then(|r| r.get(name))
                    .and_then(|v| v.as_u64().or_else(|| v.as_str()?.parse().ok()))
                    .unwrap_or(default)
            };
            let dead_letter_queue_url =
                match target.get("DeadLetterConfig").and_then(|d| d.get("Arn")) {
                    Some(arn) => {
                        let arn = resolve(arn, &with_events)?;
                        Some(
                            queue_urls
                                .get(&arn)
                                .cloned()
                                .ok_or_else(|| anyhow!("{id}: dead-letter queue {arn} unknown"))?,
                        )
                    }
                    None => None,
                };
            targets.push(ApiTarget {
                endpoint,
                method,
                header,
                detail_only: target.get("InputPath").and_then(Yaml::as_str) == Some("$.detail"),
                max_retries: u32::try_from(number("MaximumRetryAttempts", 185)).unwrap_or(185),
                max_age: Duration::from_secs(number("MaximumEventAgeInSeconds", 86_400)),
                dead_letter_queue_url,
            });
        }
        config.rules.push(EventRule {
            name: id.to_owned(),
            bus,
            pattern,
            targets,
        });
    }
    Ok(config)
}

/// A template condition: `!Equals`, `!Not`, `!And`, `!Or` over parameters and literals.
pub(crate) fn evaluate(condition: &Yaml, resources: &LocalResources<'_>) -> Result<bool> {
    let Yaml::Tagged(tagged) = condition else {
        return Err(anyhow!("unsupported condition {condition:?}"));
    };
    let items = || {
        tagged
            .value
            .as_sequence()
            .ok_or_else(|| anyhow!("!{} takes a list", tagged.tag))
    };
    match tagged.tag.to_string().trim_start_matches('!') {
        "Equals" => {
            let pair = items()?;
            let (Some(a), Some(b)) = (pair.first(), pair.get(1)) else {
                return Err(anyhow!("!Equals takes two values"));
            };
            Ok(resolve(a, resources)? == resolve(b, resources)?)
        }
        "Not" => Ok(!evaluate(
            items()?
                .first()
                .ok_or_else(|| anyhow!("!Not takes one condition"))?,
            resources,
        )?),
        "And" => items()?
            .iter()
            .try_fold(true, |all, c| Ok(all && evaluate(c, resources)?)),
        "Or" => items()?
            .iter()
            .try_fold(false, |any, c| Ok(any || evaluate(c, resources)?)),
        other => Err(anyhow!("unsupported condition function {other}")),
    }
}

/// Whether `event` matches an EventBridge pattern of exact values.
pub fn matches(pattern: &Value, event: &Value) -> bool {
    let Some(fields) = pattern.as_object() else {
        return false;
    };
    fields.iter().all(|(key, wanted)| {
        let Some(actual) = event.get(key) else {
            return false;
        };
        match wanted {
            Value::Array(allowed) => allowed.contains(actual),
            Value::Object(_) => matches(wanted, actual),
            other => other == actual,
        }
    })
}

struct Bus {
    config: EventConfig,
    http: reqwest::Client,
    sqs: aws_sdk_sqs::Client,
}

/// The running emulator.
pub struct EventBridgeEmulator {
    pub endpoint: String,
    task: JoinHandle<()>,
}

impl EventBridgeEmulator {
    pub async fn start(config: EventConfig, sqs: aws_sdk_sqs::Client) -> Result<Self> {
        let listener = TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0))).await?;
        let endpoint = format!("http://{}", listener.local_addr()?);
        let state = Arc::new(Bus {
            config,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(5))
                .build()?,
            sqs,
        });
        let app = Router::new().fallback(put_events).with_state(state);
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Self { endpoint, task })
    }

    pub fn stop(&self) {
        self.task.abort();
    }
}

impl Drop for EventBridgeEmulator {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn error(status: StatusCode, kind: &str, message: &str) -> axum::response::Response {
    (
        status,
        [("content-type", "application/x-amz-json-1.1")],
        json!({"__type": kind, "message": message}).to_string(),
    )
        .into_response()
}

async fn put_events(
    State(bus): State<Arc<Bus>>,
    headers: HeaderMap,
    body: Bytes,
) -> axum::response::Response {
    let target = headers
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if target != "AWSEvents.PutEvents" {
        return error(
            StatusCode::BAD_REQUEST,
            "UnknownOperationException",
            "only PutEvents is emulated",
        );
    }
    let Ok(request) = serde_json::from_slice::<Value>(&body) else {
        return error(
            StatusCode::BAD_REQUEST,
            "SerializationException",
            "bad JSON",
        );
    };
    let entries = request["Entries"].as_array().cloned().unwrap_or_default();
    if entries.is_empty() || entries.len() > 10 {
        return error(
            StatusCode::BAD_REQUEST,
            "ValidationException",
            "Entries must hold 1 to 10 entries",
        );
    }
    let mut results = Vec::with_capacity(entries.len());
    let mut failed = 0;
    for entry in entries {
        match envelope(&bus.config, &entry) {
            Ok((bus_name, event)) => {
                let id = event["id"].clone();
                for rule in bus.config.rules.iter().filter(|r| r.bus == bus_name) {
                    if matches(&rule.pattern, &event) {
                        for target in &rule.targets {
                            tokio::spawn(deliver(bus.clone(), target.clone(), event.clone()));
                        }
                    }
                }
                results.push(json!({"EventId": id}));
            }
            Err((code, message)) => {
                failed += 1;
                results.push(json!({"ErrorCode": code, "ErrorMessage": message}));
            }
        }
    }
    (
        StatusCode::OK,
        [("content-type", "application/x-amz-json-1.1")],
        json!({"FailedEntryCount": failed, "Entries": results}).to_string(),
    )
        .into_response()
}

/// The event EventBridge makes of one entry, and its bus; or the entry's error.
fn envelope(
    config: &EventConfig,
    entry: &Value,
) -> Result<(String, Value), (&'static str, String)> {
    let bus = entry["EventBusName"].as_str().unwrap_or("default");
    // A bus may be named by its name or its ARN.
    let bus = bus.rsplit('/').next().unwrap_or(bus).to_owned();
    if !config.buses.values().any(|b| *b == bus) {
        return Err((
            "ResourceNotFoundException",
            format!("Event bus {bus} does not exist."),
        ));
    }
    let (Some(source), Some(detail_type), Some(detail)) = (
        entry["Source"].as_str(),
        entry["DetailType"].as_str(),
        entry["Detail"].as_str(),
    ) else {
        return Err((
            "InvalidArgument",
            "Parameter(s) Source, DetailType and Detail are required.".into(),
        ));
    };
    let detail: Value = match serde_json::from_str(detail) {
        Ok(detail @ Value::Object(_)) => detail,
        _ => return Err(("MalformedDetail", "Detail is malformed.".into())),
    };
    let event = json!({
        "version": "0",
        "id": uuid::Uuid::new_v4().to_string(),
        "detail-type": detail_type,
        "source": source,
        "account": "123456789012",
        "time": chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string(),
        "region": crate::REGION,
        "resources": entry["Resources"].as_array().cloned().unwrap_or_default(),
        "detail": detail,
    });
    Ok((bus, event))
}

/// Sends one event to one target, retrying as its `RetryPolicy` says, then dead-letters it.
async fn deliver(bus: Arc<Bus>, target: ApiTarget, event: Value) {
    let body = if target.detail_only {
        event["detail"].clone()
    } else {
        event.clone()
    };
    let started = Instant::now();
    let mut attempt: u32 = 0;
    let reason = loop {
        let method =
            reqwest::Method::from_bytes(target.method.as_bytes()).unwrap_or(reqwest::Method::POST);
        let mut request = bus
            .http
            .request(method, &target.endpoint)
            .header("content-type", "application/json; charset=utf-8")
            .body(body.to_string());
        if let Some((name, value)) = &target.header {
            request = request.header(name.as_str(), value.as_str());
        }
        let (retry, reason) = match request.send().await {
            Ok(response) if response.status().is_success() => return,
            Ok(response) => {
                let status = response.status();
                (
                    status.as_u16() == 429 || status.is_server_error(),
                    format!("the endpoint answered {status}"),
                )
            }
            Err(e) => (true, format!("the endpoint could not be reached: {e}")),
        };
        if !retry || attempt >= target.max_retries || started.elapsed() >= target.max_age {
            break reason;
        }
        tokio::time::sleep(
            Duration::from_millis(100u64 << attempt.min(5)).min(Duration::from_secs(2)),
        )
        .await;
        attempt += 1;
    };
    tracing::warn!(endpoint = %target.endpoint, attempts = attempt + 1, %reason, "event not delivered");
    if let Some(queue) = &target.dead_letter_queue_url {
        let sent = bus
            .sqs
            .send_message()
            .queue_url(queue)
            .message_body(event.to_string())
            .send()
            .await;
        if let Err(e) = sent {
            tracing::error!(error = %e, "dead-lettering an undelivered event failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_match_exact_values_and_nested_fields() {
        let event = json!({"source": "tally", "detail-type": "lead.stage_changed", "detail": {"to": "SQL"}});
        assert!(matches(&json!({"source": ["tally"]}), &event));
        assert!(matches(
            &json!({"source": ["x", "tally"], "detail": {"to": ["SQL"]}}),
            &event
        ));
        assert!(!matches(&json!({"source": ["other"]}), &event));
        assert!(!matches(&json!({"detail": {"to": ["MQL"]}}), &event));
        assert!(!matches(&json!({"missing": ["x"]}), &event));
    }

    #[test]
    fn the_project_template_declares_its_bus_and_with_a_webhook_its_rule() -> Result<()> {
        let text = std::fs::read_to_string(crate::repo_root().join("template.yaml"))?;
        let mut parameters: HashMap<String, String> = HashMap::from([
            ("StageWebhookUrl".into(), String::new()),
            ("StageWebhookHeaderName".into(), "Authorization".into()),
            ("StageWebhookHeaderValue".into(), "Bearer t".into()),
        ]);
        let refs = HashMap::new();
        let dlq_arn = "arn:aws:sqs:us-east-1:123456789012:dlq".to_owned();
        let attributes = HashMap::from([(
            ("StageWebhookDeadLetterQueue".to_owned(), "Arn".to_owned()),
            dlq_arn.clone(),
        )]);
        let queues = HashMap::from([(dlq_arn, "http://q/dlq".to_owned())]);
        let resources = LocalResources {
            parameters: &parameters,
            refs: &refs,
            attributes: &attributes,
        };
        let without = parse(&text, &resources, &queues)?;
        assert_eq!(
            without.buses.get("EventBus").map(String::as_str),
            Some("tally-local-events")
        );
        assert!(without.rules.is_empty(), "no webhook, no rule");

        parameters.insert("StageWebhookUrl".into(), "http://127.0.0.1:9/hook".into());
        let resources = LocalResources {
            parameters: &parameters,
            refs: &refs,
            attributes: &attributes,
        };
        let with = parse(&text, &resources, &queues)?;
        let rule = with.rules.first().context("the stage rule")?;
        assert_eq!(rule.bus, "tally-local-events");
        assert_eq!(rule.pattern["detail-type"], json!(["lead.stage_changed"]));
        let target = rule.targets.first().context("its target")?;
        assert_eq!(target.endpoint, "http://127.0.0.1:9/hook");
        assert_eq!(
            target.header,
            Some(("Authorization".into(), "Bearer t".into()))
        );
        assert!(target.detail_only);
        assert_eq!(target.max_retries, 185);
        assert_eq!(
            target.dead_letter_queue_url.as_deref(),
            Some("http://q/dlq")
        );
        Ok(())
    }
}
