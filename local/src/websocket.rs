//! An API Gateway **WebSocket API** emulator, with its `@connections` management endpoint.
//!
//! Read from the template: the `AWS::ApiGatewayV2::Api` whose `ProtocolType` is `WEBSOCKET`, its
//! `AWS::ApiGatewayV2::Route`s (`$connect`, `$disconnect`, `$default`) and the Lambda proxy
//! integrations they target, and its `AWS::ApiGatewayV2::Stage`'s name. Served on one loopback
//! port, as API Gateway serves `wss://{api}.execute-api.{region}.amazonaws.com/{stage}`:
//!
//! - `GET /{stage}` upgrades to a WebSocket. The `$connect` function gets API Gateway's event
//!   (`requestContext` with `routeKey`, `eventType`, `connectionId`, `requestId`, `stage`,
//!   `domainName`, `apiId`; the request's `headers`, `multiValueHeaders` and
//!   `queryStringParameters`). A non-2xx `statusCode` refuses the handshake with that status; a
//!   `Sec-WebSocket-Protocol` header in its answer selects that subprotocol.
//! - Every message a client sends invokes `$default` with the message as `body`; a close (by the
//!   client or by `DELETE @connections`) invokes `$disconnect`.
//! - `POST /{stage}/@connections/{id}` sends its body to the connection (`200`),
//!   `GET` describes it, `DELETE` closes it (`204`). An unknown or closed connection answers
//!   `410` with `x-amzn-ErrorType: GoneException`, which the SDK reads as `GoneException`.
//!
//! Not emulated: authorizers, route selection on the body (`$default` takes every message), route
//! responses, the two-hour and idle limits, the 128 KB message limit, throttling.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use anyhow::{anyhow, bail, Context as _, Result};
use axum::body::Bytes;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use base64::Engine as _;
use futures::{SinkExt as _, StreamExt as _};
use serde_json::{json, Map, Value};
use serde_yaml::Value as Yaml;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::invoke::Invoker;

/// The template's WebSocket API: its stage and the function behind each route.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SocketApi {
    pub logical_id: String,
    pub stage: String,
    /// Route key (`$connect`, `$disconnect`, `$default`) → function logical id.
    pub routes: HashMap<String, String>,
}

/// The logical id inside `${X.Arn}` (or `!GetAtt X.Arn`) of an integration's URI.
fn function_of(uri: &Yaml) -> Option<String> {
    let text = match uri {
        Yaml::Tagged(tagged) => match &tagged.value {
            Yaml::String(s) => s.clone(),
            Yaml::Sequence(parts) => parts.first()?.as_str()?.to_owned(),
            _ => return None,
        },
        Yaml::String(s) => s.clone(),
        _ => return None,
    };
    let start = text.find("functions/${")? + "functions/${".len();
    let rest = &text[start..];
    Some(rest[..rest.find(['.', '}'])?].to_owned())
}

/// The logical id a `!Ref X` (or a `!Sub` naming `${X}`) points at.
fn reference(value: &Yaml) -> Option<String> {
    match value {
        Yaml::Tagged(tagged) if tagged.tag == "Ref" => tagged.value.as_str().map(str::to_owned),
        Yaml::Tagged(tagged) if tagged.tag == "Sub" => {
            let text = tagged.value.as_str()?;
            let start = text.find("${")? + 2;
            Some(text[start..start + text[start..].find('}')?].to_owned())
        }
        _ => None,
    }
}

/// The template's WebSocket API, if it declares one.
pub fn parse(template_text: &str) -> Result<Option<SocketApi>> {
    let doc: Yaml = serde_yaml::from_str(template_text)?;
    let Some(resources) = doc.get("Resources").and_then(Yaml::as_mapping) else {
        return Ok(None);
    };
    let typed = |kind: &'static str| {
        resources.iter().filter_map(move |(id, r)| {
            let id = id.as_str()?;
            (r.get("Type").and_then(Yaml::as_str) == Some(kind)).then_some((id, r))
        })
    };
    let mut apis = typed("AWS::ApiGatewayV2::Api")
        .filter(|(_, r)| r["Properties"]["ProtocolType"].as_str() == Some("WEBSOCKET"));
    let Some((api_id, _)) = apis.next() else {
        return Ok(None);
    };
    if apis.next().is_some() {
        bail!("the local stack emulates one WebSocket API; the template declares more");
    }
    let integrations: HashMap<&str, String> = typed("AWS::ApiGatewayV2::Integration")
        .filter_map(|(id, r)| Some((id, function_of(&r["Properties"]["IntegrationUri"])?)))
        .collect();
    let mut api = SocketApi {
        logical_id: api_id.to_owned(),
        ..SocketApi::default()
    };
    for (id, route) in typed("AWS::ApiGatewayV2::Route") {
        let properties = &route["Properties"];
        if reference(&properties["ApiId"]).as_deref() != Some(api_id) {
            continue;
        }
        let key = properties["RouteKey"]
            .as_str()
            .with_context(|| format!("{id}: RouteKey"))?;
        let integration = reference(&properties["Target"])
            .with_context(|| format!("{id}: Target must name an integration"))?;
        let function = integrations
            .get(integration.as_str())
            .with_context(|| format!("{id}: integration {integration} is not a Lambda proxy"))?;
        api.routes.insert(key.to_owned(), function.clone());
    }
    api.stage = typed("AWS::ApiGatewayV2::Stage")
        .find(|(_, r)| reference(&r["Properties"]["ApiId"]).as_deref() == Some(api_id))
        .and_then(|(_, r)| r["Properties"]["StageName"].as_str().map(str::to_owned))
        .ok_or_else(|| anyhow!("{api_id}: no AWS::ApiGatewayV2::Stage"))?;
    Ok(Some(api))
}

type Outbox = mpsc::UnboundedSender<Message>;

struct Hub {
    api: SocketApi,
    invoker: Arc<dyn Invoker>,
    domain: String,
    connections: Mutex<HashMap<String, (Outbox, i64)>>,
}

/// The running emulator.
pub struct SocketEmulator {
    /// `ws://127.0.0.1:{port}/{stage}`: what a browser connects to.
    pub url: String,
    /// `http://127.0.0.1:{port}/{stage}`: the management endpoint's base.
    pub callback_url: String,
    hub: Arc<Hub>,
    task: JoinHandle<()>,
}

impl SocketEmulator {
    /// The URLs a listener bound for `api` will serve, known before the functions start.
    pub fn urls(listener: &TcpListener, api: &SocketApi) -> Result<(String, String)> {
        let addr = listener.local_addr()?;
        Ok((
            format!("ws://{addr}/{}", api.stage),
            format!("http://{addr}/{}", api.stage),
        ))
    }

    pub fn start(listener: TcpListener, api: SocketApi, invoker: Arc<dyn Invoker>) -> Result<Self> {
        let (url, callback_url) = Self::urls(&listener, &api)?;
        let domain = listener.local_addr()?.to_string();
        let stage = api.stage.clone();
        let hub = Arc::new(Hub {
            api,
            invoker,
            domain,
            connections: Mutex::new(HashMap::new()),
        });
        let app = Router::new()
            .route(&format!("/{stage}"), get(upgrade))
            .route(
                &format!("/{stage}/@connections/{{id}}"),
                get(describe).post(post_to).delete(close),
            )
            .with_state(hub.clone());
        let task = tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                tracing::error!(error = %e, "the WebSocket emulator stopped");
            }
        });
        Ok(Self {
            url,
            callback_url,
            hub,
            task,
        })
    }

    /// Connections open now.
    pub fn open_connections(&self) -> usize {
        self.hub.connections.lock().map(|c| c.len()).unwrap_or(0)
    }

    pub fn stop(&self) {
        self.task.abort();
    }
}

fn new_connection_id() -> String {
    let bytes: [u8; 12] = std::array::from_fn(|_| fastrand::u8(..));
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

impl Hub {
    fn event(&self, route_key: &str, event_type: &str, connection_id: &str) -> Value {
        let now = chrono::Utc::now();
        json!({
            "requestContext": {
                "routeKey": route_key,
                "eventType": event_type,
                "messageDirection": "IN",
                "connectionId": connection_id,
                "requestId": new_connection_id(),
                "extendedRequestId": new_connection_id(),
                "requestTimeEpoch": now.timestamp_millis(),
                "stage": self.api.stage,
                "domainName": self.domain,
                "apiId": crate::gateway::API_ID,
            },
            "isBase64Encoded": false,
        })
    }

    /// Invokes a route's function; `None` when the template declares no such route.
    async fn invoke(&self, route_key: &str, event: Value) -> Option<Result<Value, String>> {
        let function = self.api.routes.get(route_key)?;
        Some(
            self.invoker
                .invoke(function, event)
                .await
                .map_err(|e| e.to_string()),
        )
    }
}

async fn upgrade(
    State(hub): State<Arc<Hub>>,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
    ws: WebSocketUpgrade,
) -> Response {
    let id = new_connection_id();
    let mut event = hub.event("$connect", "CONNECT", &id);
    let mut single = Map::new();
    let mut multi: Map<String, Value> = Map::new();
    for (name, value) in &headers {
        let Ok(value) = value.to_str() else { continue };
        single.insert(name.as_str().to_owned(), json!(value));
        if let Some(values) = multi
            .entry(name.as_str().to_owned())
            .or_insert_with(|| json!([]))
            .as_array_mut()
        {
            values.push(json!(value));
        }
    }
    event["headers"] = Value::Object(single);
    event["multiValueHeaders"] = Value::Object(multi);
    if !query.is_empty() {
        event["queryStringParameters"] = json!(query);
    }
    let mut protocol = None;
    if let Some(answer) = hub.invoke("$connect", event).await {
        let answer = match answer {
            Ok(answer) => answer,
            Err(error) => {
                tracing::warn!(%error, "$connect failed");
                return StatusCode::INTERNAL_SERVER_ERROR.into_response();
            }
        };
        let status = answer["statusCode"].as_u64().unwrap_or(200);
        if !(200..300).contains(&status) {
            let status = u16::try_from(status)
                .ok()
                .and_then(|s| StatusCode::from_u16(s).ok())
                .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            return status.into_response();
        }
        protocol = answer["headers"].as_object().and_then(|h| {
            h.iter()
                .find(|(name, _)| name.eq_ignore_ascii_case("sec-websocket-protocol"))
                .and_then(|(_, v)| v.as_str().map(str::to_owned))
        });
    }
    let ws = match protocol {
        Some(p) => ws.protocols([p]),
        None => ws,
    };
    ws.on_upgrade(move |socket| serve_connection(hub, id, socket))
}

async fn serve_connection(hub: Arc<Hub>, id: String, socket: WebSocket) {
    let (mut sink, mut stream) = socket.split();
    let (outbox, mut inbox) = mpsc::unbounded_channel::<Message>();
    if let Ok(mut connections) = hub.connections.lock() {
        connections.insert(id.clone(), (outbox, chrono::Utc::now().timestamp_millis()));
    }
    let writer = tokio::spawn(async move {
        while let Some(message) = inbox.recv().await {
            let closing = matches!(message, Message::Close(_));
            if sink.send(message).await.is_err() || closing {
                break;
            }
        }
    });
    while let Some(Ok(message)) = stream.next().await {
        let body = match message {
            Message::Text(text) => text.to_string(),
            Message::Binary(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
            Message::Close(_) => break,
            Message::Ping(_) | Message::Pong(_) => continue,
        };
        let mut event = hub.event("$default", "MESSAGE", &id);
        event["body"] = json!(body);
        if let Some(Err(error)) = hub.invoke("$default", event).await {
            tracing::warn!(%error, "$default failed");
        }
    }
    // However it ended (the client, or `DELETE @connections`), `$disconnect` runs once.
    if let Ok(mut connections) = hub.connections.lock() {
        connections.remove(&id);
    }
    writer.abort();
    let event = hub.event("$disconnect", "DISCONNECT", &id);
    if let Some(Err(error)) = hub.invoke("$disconnect", event).await {
        tracing::warn!(%error, "$disconnect failed");
    }
}

fn gone() -> Response {
    (
        StatusCode::GONE,
        [
            ("x-amzn-ErrorType", "GoneException"),
            ("content-type", "application/json"),
        ],
        r#"{"message":"The connection is no longer available"}"#,
    )
        .into_response()
}

async fn post_to(State(hub): State<Arc<Hub>>, Path(id): Path<String>, body: Bytes) -> Response {
    let outbox = hub
        .connections
        .lock()
        .ok()
        .and_then(|c| c.get(&id).map(|(outbox, _)| outbox.clone()));
    let Some(outbox) = outbox else {
        return gone();
    };
    let message = match String::from_utf8(body.to_vec()) {
        Ok(text) => Message::Text(text.into()),
        Err(_) => Message::Binary(body),
    };
    if outbox.send(message).is_err() {
        return gone();
    }
    StatusCode::OK.into_response()
}

async fn describe(State(hub): State<Arc<Hub>>, Path(id): Path<String>) -> Response {
    let connected_at = hub
        .connections
        .lock()
        .ok()
        .and_then(|c| c.get(&id).map(|(_, at)| *at));
    match connected_at {
        Some(at) => {
            let at = chrono::DateTime::from_timestamp_millis(at)
                .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true));
            axum::Json(json!({"connectedAt": at, "lastActiveAt": at,
                              "identity": {"sourceIp": "127.0.0.1"}}))
            .into_response()
        }
        None => gone(),
    }
}

async fn close(State(hub): State<Arc<Hub>>, Path(id): Path<String>) -> Response {
    let outbox = hub
        .connections
        .lock()
        .ok()
        .and_then(|mut c| c.remove(&id).map(|(outbox, _)| outbox));
    match outbox {
        Some(outbox) => {
            let _ = outbox.send(Message::Close(None));
            StatusCode::NO_CONTENT.into_response()
        }
        None => gone(),
    }
}
