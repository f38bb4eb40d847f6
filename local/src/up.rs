//! `tally-local up`: the whole stack on one machine — emulators, resources from the template,
//! function binaries under the Runtime API emulator, the HTTP API, SQS mappings and schedules.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use async_trait::async_trait;
use serde_json::{json, Value};
use tally::auth::ApiKeys;

use crate::functions::{self, EventDef, FunctionDef, LocalResources};
use crate::gateway::{Gateway, GatewayConfig, Route};
use crate::invoke::{InvokeError, Invoker};
use crate::meter::classify::Service;
use crate::meter::{Meter, MeteringProxy, Upstream};
use crate::runtime::{FunctionSpec, Runtimes};
use crate::sources::{
    OnFailure, ScheduleExpression, ScheduleSpec, Scheduler, SqsMapping, SqsPoller, StreamMapping,
    StreamPoller,
};
use crate::template::Template;
use crate::throttle::Throttling;
use crate::{EmulatorOptions, Emulators, Stack};

/// API keys and webhook secrets of the local stack. Local-only values (printed at start-up),
/// never used for a deployment; override them with `--parameter`.
pub const LOCAL_INGEST_KEY: &str = "local-ingest-key";
pub const LOCAL_READ_KEY: &str = "local-read-key";
pub const LOCAL_ADMIN_KEY: &str = "local-admin-key";
/// A publishable key (scope `track`) for the origins of `--parameter TrackOrigins=...`; there is
/// none while that parameter is empty.
pub const LOCAL_TRACK_KEY: &str = "local-track-key";
pub const LOCAL_TIKTOK_SECRET: &str = "local-tiktok-secret";
const LOCAL_SECRETS: &[(&str, &str)] = &[
    ("FacebookAppSecret", "local-facebook-secret"),
    ("FacebookVerifyToken", "local-verify-token"),
    ("TikTokWebhookSecret", LOCAL_TIKTOK_SECRET),
    ("WebhookSecrets", "shop=local-shop-secret"),
];

/// Function environment variables that carry the WebSocket API's URLs (the console's socket URL
/// and the live function's `@connections` endpoint); the local stack sets them to its emulator's.
const LIVE_URL_VARIABLE: &str = "LIVE_URL";
const LIVE_CALLBACK_VARIABLE: &str = "LIVE_CALLBACK_URL";

/// The pseudo-function behind `POST /_local/schedules/{name}`: fires a schedule now.
const TRIGGER_FUNCTION: &str = "__tally_local_trigger__";

#[derive(Debug, Clone)]
pub struct UpOptions {
    pub api_addr: SocketAddr,
    /// Address of the WebSocket API (the template's `AWS::ApiGatewayV2::Api`, if any).
    pub live_addr: SocketAddr,
    pub state_dir: Option<PathBuf>,
    pub template: PathBuf,
    pub release: bool,
    /// `Name=Value` template parameter overrides.
    pub parameters: Vec<(String, String)>,
    /// Cargo features for the function build (e.g. `process/faults` in end-to-end tests).
    pub cargo_features: Vec<String>,
    /// Most execution environments of one function at once (the template's
    /// `ReservedConcurrentExecutions` may lower it).
    pub concurrency: u32,
    /// How long an idle execution environment is kept (the last one of a function stays).
    pub idle_timeout: Duration,
    /// Bill every call the functions and the SQS pollers make (`tally-local cost`).
    pub meter: Option<Meter>,
    /// Fire the template's schedules on their own (off, they still run when triggered).
    pub schedules: bool,
}

/// The local cap on one function's execution environments: enough to show scale-out and to
/// overlap DynamoDB and SQS round trips on two cores, without a process per core per poller.
pub const DEFAULT_CONCURRENCY: u32 = 4;

impl UpOptions {
    /// `template` on loopback ports the system picks, debug binaries, no overrides: what tests
    /// and benches start from.
    pub fn new(template: PathBuf) -> Self {
        Self {
            api_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            live_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            state_dir: None,
            template,
            release: false,
            parameters: Vec::new(),
            cargo_features: Vec::new(),
            concurrency: DEFAULT_CONCURRENCY,
            idle_timeout: crate::runtime::DEFAULT_IDLE_TIMEOUT,
            meter: None,
            schedules: true,
        }
    }
}

pub struct LocalStack {
    pub api_addr: SocketAddr,
    pub stack: Stack,
    pub functions: Vec<FunctionDef>,
    gateway: Gateway,
    pollers: Vec<SqsPoller>,
    stream_pollers: Vec<StreamPoller>,
    scheduler: Arc<Scheduler>,
    runtimes: Arc<Runtimes>,
    state_dir: Option<PathBuf>,
    /// The template's event buses and rules (EventBridge, emulated here).
    pub event_bus: crate::events::EventBridgeEmulator,
    /// The template's WebSocket API with its `@connections` endpoint, if it declares one.
    pub live: Option<crate::websocket::SocketEmulator>,
    _proxies: Vec<MeteringProxy>,
    _emulators: Emulators,
}

/// Routes invocations to the runtimes, except the local control route.
struct LocalInvoker {
    runtimes: Arc<Runtimes>,
    scheduler: OnceLock<Arc<Scheduler>>,
}

#[async_trait]
impl Invoker for LocalInvoker {
    async fn invoke(&self, function: &str, event: Value) -> Result<Value, InvokeError> {
        if function != TRIGGER_FUNCTION {
            return self.runtimes.invoke(function, event).await;
        }
        let name = event["pathParameters"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let Some(scheduler) = self.scheduler.get() else {
            return Ok(
                json!({"statusCode": 503, "body": "{\"message\":\"scheduler not started\"}"}),
            );
        };
        if !scheduler.schedules().any(|s| s.name == name) {
            let body = json!({"message": "no such schedule", "schedules": scheduler.schedules().map(|s| s.name.clone()).collect::<Vec<_>>()});
            return Ok(
                json!({"statusCode": 404, "headers": {"content-type": "application/json"}, "body": body.to_string()}),
            );
        }
        let result = scheduler.trigger_now(&name).await;
        let body = match result {
            Ok(output) => json!({"schedule": name, "result": output}),
            Err(e) => json!({"schedule": name, "error": e.to_string()}),
        };
        Ok(
            json!({"statusCode": 200, "headers": {"content-type": "application/json"}, "body": body.to_string()}),
        )
    }
}

impl LocalStack {
    pub async fn start(options: UpOptions) -> Result<LocalStack> {
        let text = std::fs::read_to_string(&options.template)
            .with_context(|| format!("reading {}", options.template.display()))?;
        let text = with_parameter_defaults(&text, &options.parameters)?;
        let template =
            Template::parse(&text).context("reading the template's tables and queues")?;
        let functions = functions::parse(&text).context("reading the template's functions")?;
        if functions.is_empty() {
            bail!("the template declares no AWS::Serverless::Function");
        }
        let binaries = build(&functions, options.release, &options.cargo_features).await?;

        let emulator_options = EmulatorOptions {
            dynamodb_data_dir: options.state_dir.as_ref().map(|d| d.join("dynamodb")),
        };
        let emulators = tokio::task::spawn_blocking(move || Emulators::start(&emulator_options))
            .await
            .context("emulator start-up task")??;
        let stack = Stack::create_named(
            &template,
            &emulators.dynamodb_endpoint,
            &emulators.moto_endpoint,
            "tally".into(),
        )
        .await
        .context("creating the template's tables and queues")?;

        if let Some(dir) = &options.state_dir {
            let restored =
                crate::queue_state::restore(&stack.sqs, &stack.queues, &dir.join("sqs")).await?;
            if restored > 0 {
                tracing::info!(
                    messages = restored,
                    "queue messages restored from the state dir"
                );
            }
        }
        let parameters = parameters(&template, &options.parameters);
        let stream_arns = stream_arns(&stack).await?;
        let (mut refs, attributes) = resource_values(&stack, &functions, &stream_arns);
        let secrets = crate::secrets::create(
            &text,
            &LocalResources {
                parameters: &parameters,
                refs: &refs,
                attributes: &attributes,
            },
            &emulators.moto_endpoint,
            "tally",
        )
        .await
        .context("creating the template's secrets")?;
        refs.extend(secrets);
        let queue_urls: HashMap<String, String> = stack
            .queues
            .values()
            .map(|q| (q.arn.clone(), q.url.clone()))
            .collect();
        let events = crate::events::parse(
            &text,
            &LocalResources {
                parameters: &parameters,
                refs: &refs,
                attributes: &attributes,
            },
            &queue_urls,
        )
        .context("reading the template's event buses and rules")?;
        refs.extend(events.buses.clone());
        let event_bus =
            crate::events::EventBridgeEmulator::start(events, stack.sqs.clone()).await?;
        let resources = LocalResources {
            parameters: &parameters,
            refs: &refs,
            attributes: &attributes,
        };
        // The WebSocket API's address is known before the functions start, because the console
        // and the live function are told its URLs.
        let socket_api = crate::websocket::parse(&text).context("reading the WebSocket API")?;
        let socket = match socket_api {
            Some(api) => {
                let listener = tokio::net::TcpListener::bind(options.live_addr)
                    .await
                    .with_context(|| {
                        format!("binding the WebSocket API to {}", options.live_addr)
                    })?;
                let urls = crate::websocket::SocketEmulator::urls(&listener, &api)?;
                Some((listener, api, urls))
            }
            None => None,
        };
        let conditions = serde_yaml::from_str::<serde_yaml::Value>(&text)
            .context("parsing the template")?
            .get("Conditions")
            .and_then(serde_yaml::Value::as_mapping)
            .cloned();
        let mut specs = Vec::new();
        let mut proxies = Vec::new();
        let mut concurrency: HashMap<String, u32> = HashMap::new();
        for (f, binary) in functions.iter().zip(binaries) {
            let reserved = functions::reserved_concurrency(f, conditions.as_ref(), &resources)
                .with_context(|| f.logical_id.clone())?;
            if reserved == Some(0) {
                tracing::warn!(function = %f.logical_id, "ReservedConcurrentExecutions 0 stops a function in AWS; running one environment locally");
            }
            let max_concurrency = reserved.unwrap_or(u32::MAX).min(options.concurrency).max(1);
            concurrency.insert(f.logical_id.clone(), max_concurrency);
            let mut env: Vec<(String, String)> = Vec::new();
            for (name, value) in &f.environment {
                let value = match (name.as_str(), &socket) {
                    // The template builds these from the WebSocket API's id and region; locally
                    // they are the emulator's.
                    (LIVE_URL_VARIABLE, Some((_, _, (url, _)))) => url.clone(),
                    (LIVE_CALLBACK_VARIABLE, Some((_, _, (_, callback)))) => callback.clone(),
                    _ => functions::resolve(value, &resources).with_context(|| {
                        format!("{}: environment variable {name}", f.logical_id)
                    })?,
                };
                env.push((name.clone(), value));
            }
            let endpoints = Endpoints::for_caller(
                &f.logical_id,
                options.meter.as_ref(),
                &emulators,
                &event_bus.endpoint,
                &mut proxies,
            )
            .await?;
            env.extend([
                ("AWS_ENDPOINT_URL_DYNAMODB".into(), endpoints.dynamodb),
                ("AWS_ENDPOINT_URL_SQS".into(), endpoints.moto.clone()),
                ("AWS_ENDPOINT_URL_S3".into(), endpoints.moto.clone()),
                ("AWS_ENDPOINT_URL_FIREHOSE".into(), endpoints.moto.clone()),
                ("AWS_ENDPOINT_URL_SECRETS_MANAGER".into(), endpoints.moto),
                ("AWS_ENDPOINT_URL_EVENTBRIDGE".into(), endpoints.events),
                ("AWS_ACCESS_KEY_ID".into(), "test".into()),
                ("AWS_SECRET_ACCESS_KEY".into(), "test".into()),
                ("AWS_REGION".into(), crate::REGION.into()),
            ]);
            specs.push(FunctionSpec {
                name: f.logical_id.clone(),
                binary,
                env,
                timeout: f.timeout,
                memory_mb: f.memory_mb,
                max_concurrency,
                idle_timeout: options.idle_timeout,
            });
        }
        let runtimes = Arc::new(Runtimes::start(specs)?);
        let live = match socket {
            Some((listener, api, _)) => Some(crate::websocket::SocketEmulator::start(
                listener,
                api,
                runtimes.clone(),
            )?),
            None => None,
        };
        let invoker = Arc::new(LocalInvoker {
            runtimes: runtimes.clone(),
            scheduler: OnceLock::new(),
        });

        let mut routes = vec![Route::new(
            "POST",
            "/_local/schedules/{name}",
            TRIGGER_FUNCTION,
        )];
        let mut pollers = Vec::new();
        let mut stream_pollers = Vec::new();
        let streams =
            aws_sdk_dynamodbstreams::Client::new(&crate::sdk_config(&stack.dynamodb_endpoint));
        let mut schedules = Vec::new();
        // Lambda's SQS pollers make billed requests in the account; its stream pollers do not.
        let poller_sqs = match &options.meter {
            Some(_) => {
                let endpoints = Endpoints::for_caller(
                    SQS_POLLERS,
                    options.meter.as_ref(),
                    &emulators,
                    &event_bus.endpoint,
                    &mut proxies,
                )
                .await?;
                aws_sdk_sqs::Client::new(&crate::sdk_config(&endpoints.moto))
            }
            None => stack.sqs.clone(),
        };
        for f in &functions {
            for event in &f.events {
                match event {
                    EventDef::HttpApi { method, path, .. } => {
                        routes.push(Route::new(method, path, &f.logical_id))
                    }
                    EventDef::Sqs(sqs) => {
                        let queue = stack.queue(&sqs.queue_logical_id)?;
                        let mut mapping = SqsMapping::new(&f.logical_id, &queue.url, &queue.arn);
                        mapping.batch_size = sqs.batch_size;
                        mapping.batching_window = sqs.batching_window;
                        mapping.report_batch_item_failures = sqs.report_batch_item_failures;
                        mapping.function_timeout = f.timeout;
                        let function_concurrency =
                            concurrency.get(&f.logical_id).copied().unwrap_or(1);
                        mapping.maximum_concurrency = sqs
                            .maximum_concurrency
                            .unwrap_or(function_concurrency)
                            .min(function_concurrency);
                        pollers.push(SqsPoller::start(
                            poller_sqs.clone(),
                            mapping,
                            runtimes.clone(),
                        ));
                    }
                    EventDef::Schedule(s) => schedules.push(ScheduleSpec {
                        name: s.name.clone(),
                        function: f.logical_id.clone(),
                        expression: ScheduleExpression::parse(&s.expression)
                            .map_err(|e| anyhow!("{}: schedule {}: {e}", f.logical_id, s.name))?,
                        input: s.input.clone(),
                        enabled: s.enabled && options.schedules,
                    }),
                    EventDef::DynamoDb(s) => {
                        let arn = stream_arns.get(&s.table_logical_id).with_context(|| {
                            format!(
                                "{}: table {} has no stream",
                                f.logical_id, s.table_logical_id
                            )
                        })?;
                        let on_failure = match &s.on_failure_queue_logical_id {
                            Some(id) => {
                                let q = stack.queue(id)?;
                                Some(OnFailure {
                                    queue_url: q.url.clone(),
                                    queue_arn: q.arn.clone(),
                                })
                            }
                            None => None,
                        };
                        let mapping = StreamMapping::from_event(
                            s,
                            &f.logical_id,
                            arn.clone(),
                            on_failure,
                            f.timeout,
                        );
                        stream_pollers.push(StreamPoller::start(
                            streams.clone(),
                            stack.sqs.clone(),
                            mapping,
                            runtimes.clone(),
                        ));
                    }
                }
            }
        }
        let scheduler =
            Arc::new(Scheduler::start(schedules, runtimes.clone()).map_err(|e| anyhow!("{e}"))?);
        let _ = invoker.scheduler.set(scheduler.clone());
        let throttling = Throttling::from_template(&text, &resources)
            .context("reading the HTTP API's throttling")?;
        let cors = crate::cors::Cors::from_template(&text, &resources)
            .context("reading the HTTP API's CORS configuration")?;
        let gateway = Gateway::bind_with_config(
            options.api_addr,
            routes,
            invoker,
            GatewayConfig {
                throttling,
                cors,
                ..GatewayConfig::default()
            },
        )
        .await?;
        Ok(LocalStack {
            api_addr: gateway.local_addr(),
            stack,
            functions,
            gateway,
            pollers,
            stream_pollers,
            scheduler,
            runtimes,
            state_dir: options.state_dir,
            event_bus,
            live,
            _proxies: proxies,
            _emulators: emulators,
        })
    }

    /// The function processes, their status and their invocation reports.
    pub fn runtimes(&self) -> &Runtimes {
        &self.runtimes
    }

    /// Stops taking requests, lets in-flight batches finish, then stops every process.
    pub async fn stop(self) {
        self.gateway.shutdown().await;
        if let Some(live) = &self.live {
            live.stop();
        }
        for poller in self.pollers {
            poller.stop().await;
        }
        for poller in self.stream_pollers {
            poller.stop().await;
        }
        if let Ok(scheduler) = Arc::try_unwrap(self.scheduler) {
            scheduler.stop().await;
        }
        if let Ok(runtimes) = Arc::try_unwrap(self.runtimes) {
            runtimes.shutdown().await;
        }
        if let Some(dir) = &self.state_dir {
            match crate::queue_state::save(&self.stack.sqs, &self.stack.queues, &dir.join("sqs"))
                .await
            {
                Ok(saved) => {
                    tracing::info!(messages = saved, "queue messages saved to the state dir")
                }
                Err(e) => {
                    tracing::error!(error = %format!("{e:#}"), "queue messages could not be saved")
                }
            }
        }
        // Dropping the emulators closes their life lines; they exit.
    }

    /// What is running and how to try it.
    pub fn banner(&self) -> String {
        let api = format!("http://{}", self.api_addr);
        let mut out = String::new();
        out.push_str(&format!(
            "Tally local stack\n  console       {api}/\n  HTTP API      {api}\n"
        ));
        if let Some(live) = &self.live {
            out.push_str(&format!(
                "  WebSocket API {} (@connections at {})\n",
                live.url, live.callback_url
            ));
        }
        out.push_str(&format!(
            "  DynamoDB      {}\n  moto          {} (SQS, S3, Firehose)\n",
            self.stack.dynamodb_endpoint, self.stack.moto_endpoint
        ));
        for (id, name) in sorted(&self.stack.tables) {
            out.push_str(&format!("  table         {id} = {name}\n"));
        }
        for (id, q) in sorted(&self.stack.queues) {
            out.push_str(&format!("  queue         {id} = {}\n", q.url));
        }
        for (id, b) in sorted(&self.stack.buckets) {
            out.push_str(&format!("  bucket        {id} = s3://{}\n", b.name));
        }
        for (id, d) in sorted(&self.stack.delivery_streams) {
            let destination = match self.stack.buckets.get(&d.bucket_logical_id) {
                Some(b) => format!("s3://{}/{}", b.name, d.prefix.as_deref().unwrap_or("")),
                None => d.bucket_logical_id.clone(),
            };
            out.push_str(&format!(
                "  firehose      {id} = {} -> {destination}\n",
                d.name
            ));
        }
        for f in &self.functions {
            let events: Vec<String> = f
                .events
                .iter()
                .map(|e| match e {
                    EventDef::HttpApi { method, path, .. } => format!("{method} {path}"),
                    EventDef::Sqs(s) => format!("SQS {}", s.queue_logical_id),
                    EventDef::DynamoDb(s) => {
                        format!("stream {}", s.table_logical_id)
                    }
                    EventDef::Schedule(s) => format!("schedule {} {}", s.name, s.expression),
                })
                .collect();
            out.push_str(&format!(
                "  function      {} ({} s, {} MB): {}\n",
                f.logical_id,
                f.timeout.as_secs(),
                f.memory_mb,
                events.join(", ")
            ));
        }
        out.push_str(&format!(
            "  API keys      {LOCAL_INGEST_KEY} (ingest), {LOCAL_READ_KEY} (read), {LOCAL_ADMIN_KEY} (admin)\n\nTry:\n  curl -s -X POST {api}/v1/events -H 'authorization: Bearer {LOCAL_INGEST_KEY}' \\\n    -H 'content-type: application/json' -d '{{\"type\":\"PAGE_VIEW\",\"userId\":\"u1\"}}'\n  curl -s -X POST {api}/_local/schedules/<name>   # fire a schedule now\nCtrl-C stops everything.\n"
        ));
        out
    }
}

/// The caller name of the SQS pollers' requests in a meter.
pub const SQS_POLLERS: &str = "SQS event source mappings";

/// The endpoints one caller talks to: the emulators', or metering proxies in front of them.
struct Endpoints {
    dynamodb: String,
    moto: String,
    events: String,
}

impl Endpoints {
    async fn for_caller(
        caller: &str,
        meter: Option<&Meter>,
        emulators: &Emulators,
        events: &str,
        proxies: &mut Vec<MeteringProxy>,
    ) -> Result<Endpoints> {
        let Some(meter) = meter else {
            return Ok(Endpoints {
                dynamodb: emulators.dynamodb_endpoint.clone(),
                moto: emulators.moto_endpoint.clone(),
                events: events.to_owned(),
            });
        };
        let proxy = |service, endpoint: &str| {
            let upstream = Upstream {
                service,
                endpoint: endpoint.to_owned(),
            };
            MeteringProxy::start(caller, upstream, meter.clone())
        };
        let dynamodb = proxy(Service::DynamoDb, &emulators.dynamodb_endpoint).await?;
        let moto = proxy(Service::Moto, &emulators.moto_endpoint).await?;
        let events = proxy(Service::EventBridge, events).await?;
        let endpoints = Endpoints {
            dynamodb: dynamodb.endpoint.clone(),
            moto: moto.endpoint.clone(),
            events: events.endpoint.clone(),
        };
        proxies.extend([dynamodb, moto, events]);
        Ok(endpoints)
    }
}

fn sorted<V>(map: &HashMap<String, V>) -> Vec<(&String, &V)> {
    let mut entries: Vec<_> = map.iter().collect();
    entries.sort_by(|a, b| a.0.cmp(b.0));
    entries
}

/// The template with overridden parameters' `Default`s replaced, so that everything read from it
/// (queue redrive policies as well as function environments) sees the same values.
fn with_parameter_defaults(text: &str, overrides: &[(String, String)]) -> Result<String> {
    if overrides.is_empty() {
        return Ok(text.to_owned());
    }
    let mut doc: serde_yaml::Value = serde_yaml::from_str(text).context("parsing the template")?;
    for (name, value) in overrides {
        let parameter = doc
            .get_mut("Parameters")
            .and_then(|p| p.get_mut(name.as_str()))
            .and_then(serde_yaml::Value::as_mapping_mut)
            .ok_or_else(|| anyhow!("--parameter {name}: the template has no such parameter"))?;
        parameter.insert("Default".into(), serde_yaml::Value::String(value.clone()));
    }
    serde_yaml::to_string(&doc).context("writing the template")
}

/// Template defaults, then the local keys and secrets, then the user's overrides.
fn parameters(template: &Template, overrides: &[(String, String)]) -> HashMap<String, String> {
    let mut parameters = template.parameters.clone();
    let track_origins = overrides
        .iter()
        .rev()
        .find(|(name, _)| name == "TrackOrigins")
        .map(|(_, origins)| origins.clone())
        .or_else(|| parameters.get("TrackOrigins").cloned())
        .unwrap_or_default();
    let mut keys = [
        (LOCAL_INGEST_KEY, "ingest"),
        (LOCAL_READ_KEY, "read"),
        (LOCAL_ADMIN_KEY, "admin"),
    ]
    .iter()
    .map(|(key, scope)| format!("{}:{scope}", ApiKeys::digest(key)))
    .collect::<Vec<_>>();
    if !track_origins.is_empty() {
        keys.push(format!(
            "{}:track={}",
            ApiKeys::digest(LOCAL_TRACK_KEY),
            track_origins.replace(',', " ")
        ));
    }
    parameters.insert("ApiKeyDigests".into(), keys.join(","));
    for (name, value) in LOCAL_SECRETS {
        parameters.insert((*name).into(), (*value).into());
    }
    for (name, value) in overrides {
        parameters.insert(name.clone(), value.clone());
    }
    parameters
}

type Attributes = HashMap<(String, String), String>;

/// Table logical id → latest stream ARN, for tables with a stream.
async fn stream_arns(stack: &Stack) -> Result<HashMap<String, String>> {
    let mut arns = HashMap::new();
    for (id, name) in &stack.tables {
        let described = stack
            .dynamodb
            .describe_table()
            .table_name(name)
            .send()
            .await
            .map_err(|e| {
                anyhow!(
                    "DescribeTable {name}: {}",
                    aws_sdk_dynamodb::error::DisplayErrorContext(e)
                )
            })?;
        if let Some(arn) = described.table().and_then(|t| t.latest_stream_arn()) {
            arns.insert(id.clone(), arn.to_owned());
        }
    }
    Ok(arns)
}

fn resource_values(
    stack: &Stack,
    functions: &[FunctionDef],
    stream_arns: &HashMap<String, String>,
) -> (HashMap<String, String>, Attributes) {
    let mut refs = HashMap::new();
    let mut attributes = HashMap::new();
    for (id, arn) in stream_arns {
        attributes.insert((id.clone(), "StreamArn".into()), arn.clone());
    }
    for (id, name) in &stack.tables {
        refs.insert(id.clone(), name.clone());
        attributes.insert(
            (id.clone(), "Arn".into()),
            format!(
                "arn:aws:dynamodb:{}:123456789012:table/{name}",
                crate::REGION
            ),
        );
    }
    for (id, q) in &stack.queues {
        refs.insert(id.clone(), q.url.clone());
        attributes.insert((id.clone(), "Arn".into()), q.arn.clone());
        attributes.insert((id.clone(), "QueueName".into()), q.name.clone());
        attributes.insert((id.clone(), "QueueUrl".into()), q.url.clone());
    }
    for (id, b) in &stack.buckets {
        refs.insert(id.clone(), b.name.clone());
        attributes.insert((id.clone(), "Arn".into()), b.arn.clone());
    }
    for (id, d) in &stack.delivery_streams {
        refs.insert(id.clone(), d.name.clone());
        attributes.insert((id.clone(), "Arn".into()), d.arn.clone());
    }
    for f in functions {
        refs.insert(f.logical_id.clone(), f.logical_id.clone());
    }
    (refs, attributes)
}

/// Builds the functions' binaries with cargo; returns their paths in `functions` order.
async fn build(
    functions: &[FunctionDef],
    release: bool,
    features: &[String],
) -> Result<Vec<PathBuf>> {
    let root = crate::repo_root();
    let mut command =
        tokio::process::Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    command.arg("build").arg("--locked").current_dir(&root);
    if release {
        command.arg("--release");
    }
    for f in functions {
        command.arg("--bin").arg(&f.binary);
    }
    if !features.is_empty() {
        command.arg("--features").arg(features.join(","));
    }
    let status = command.status().await.context("running cargo build")?;
    if !status.success() {
        bail!("cargo build of the function binaries failed ({status})");
    }
    let target =
        std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root.join("target"), PathBuf::from);
    let profile = if release { "release" } else { "debug" };
    functions
        .iter()
        .map(|f| {
            let path = target.join(profile).join(&f.binary);
            if path.is_file() {
                Ok(path)
            } else {
                Err(anyhow!("built binary {} not found", path.display()))
            }
        })
        .collect()
}

/// Waits for Ctrl-C (SIGINT) or SIGTERM.
pub async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        if let Ok(mut term) =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        {
            tokio::select! {
                _ = interrupt => {}
                _ = term.recv() => {}
            }
            return;
        }
    }
    let _ = interrupt.await;
}

/// Time allowed for a graceful stop before the process exits anyway.
pub const STOP_GRACE: Duration = Duration::from_secs(20);
