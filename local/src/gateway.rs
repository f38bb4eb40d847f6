//! An API Gateway **HTTP API** emulator (Lambda proxy integration, payload format 2.0).
//!
//! [`Gateway::bind`] listens on a TCP address, matches each request against the configured
//! [`Route`]s the way API Gateway does (literal segments beat `{param}`, which beats `{proxy+}`;
//! an explicit method beats `ANY`; `$default` catches the rest), turns it into a payload-2.0 event,
//! calls the function through an [`Invoker`] and maps the function's answer back to HTTP the way
//! API Gateway does:
//!
//! - an object with `statusCode` is a structured response (`headers`, `multiValueHeaders`,
//!   `cookies`, `body`, `isBase64Encoded`);
//! - anything else is returned as `200 application/json` with the JSON text as the body;
//! - a malformed structured response is a `500`.
//!
//! Gateway-made answers use API Gateway's own bodies: `404 {"message":"Not Found"}`,
//! `413 {"message":"Request Entity Too Large"}`, `500 {"message":"Internal Server Error"}` and
//! `503 {"message":"Service Unavailable"}`. Every response carries `apigw-requestid`.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, Request, State};
use axum::http::header::{self, HeaderMap, HeaderName, HeaderValue};
use axum::http::{Response, StatusCode};
use axum::Router;
use base64::Engine as _;
use futures::StreamExt as _;
use serde_json::{json, Map, Value};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::cors::Cors;
use crate::invoke::{InvokeError, Invoker};
use crate::throttle::{Buckets, Throttling};

/// API Gateway's request payload quota for HTTP APIs.
pub const MAX_BODY_BYTES: usize = 10 * 1024 * 1024;
/// API Gateway's maximum integration timeout for HTTP APIs.
pub const INTEGRATION_TIMEOUT: Duration = Duration::from_secs(30);
/// The account id put in `requestContext.accountId`.
pub const ACCOUNT_ID: &str = "123456789012";
/// The API id put in `requestContext.apiId`.
pub const API_ID: &str = "local";
/// The route key (and path) of the catch-all route.
pub const DEFAULT_ROUTE: &str = "$default";

/// The response header carrying the request id, as API Gateway sends it.
const REQUEST_ID_HEADER: &str = "apigw-requestid";
/// How much of an oversized body is read (and thrown away) before answering 413, so that the
/// client, which is usually still sending, gets to read the answer.
const OVERSIZE_DRAIN_BYTES: usize = 4 * MAX_BODY_BYTES;

/// One route of the HTTP API: `"{method} {path}"` integrated with a function.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// An HTTP method (`"GET"`, `"POST"`, ...) or `"ANY"`. Case-insensitive.
    pub method: String,
    /// A path such as `/v1/webhooks/{source}` or `/files/{proxy+}`, or `$default` (the method is
    /// then ignored).
    pub path: String,
    /// The name passed to [`Invoker::invoke`].
    pub function: String,
}

impl Route {
    pub fn new(
        method: impl Into<String>,
        path: impl Into<String>,
        function: impl Into<String>,
    ) -> Self {
        Self {
            method: method.into(),
            path: path.into(),
            function: function.into(),
        }
    }
}

/// Settings that differ from API Gateway's only in tests.
#[derive(Debug, Clone)]
pub struct GatewayConfig {
    /// How long the gateway waits for the function before answering 503. The invocation itself
    /// is not cancelled (like in AWS, the function runs on). Default [`INTEGRATION_TIMEOUT`].
    pub integration_timeout: Duration,
    /// Largest accepted request body; larger bodies get 413. Default [`MAX_BODY_BYTES`].
    pub max_body_bytes: usize,
    /// The HTTP API's throttling (the template's `DefaultRouteSettings` and `RouteSettings`).
    /// Default: none.
    pub throttling: Throttling,
    /// The HTTP API's `CorsConfiguration`. Default: none (no CORS headers, no preflights).
    pub cors: Option<Cors>,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        Self {
            integration_timeout: INTEGRATION_TIMEOUT,
            max_body_bytes: MAX_BODY_BYTES,
            throttling: Throttling::default(),
            cors: None,
        }
    }
}

/// A running HTTP API emulator. Dropping it without [`Gateway::shutdown`] also starts a graceful
/// shutdown, but nothing waits for it.
#[derive(Debug)]
pub struct Gateway {
    local_addr: SocketAddr,
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

impl Gateway {
    /// Binds `addr` now (so a port in use is an error here) and serves in a spawned task.
    pub async fn bind(
        addr: SocketAddr,
        routes: Vec<Route>,
        invoker: Arc<dyn Invoker>,
    ) -> anyhow::Result<Gateway> {
        Self::bind_with_config(addr, routes, invoker, GatewayConfig::default()).await
    }

    /// [`Gateway::bind`] with non-default settings.
    pub async fn bind_with_config(
        addr: SocketAddr,
        routes: Vec<Route>,
        invoker: Arc<dyn Invoker>,
        config: GatewayConfig,
    ) -> anyhow::Result<Gateway> {
        let router = RouteTable::new(routes)?;
        let listener = TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding the HTTP API emulator to {addr}"))?;
        let local_addr = listener.local_addr().context("reading the bound address")?;
        let state = Arc::new(Shared {
            router,
            invoker,
            buckets: Buckets::new(config.throttling.clone()),
            config,
            local_addr,
            next_id: AtomicU32::new(0),
        });
        let app = Router::new().fallback(handle).with_state(state);
        let (stop, stopped) = oneshot::channel::<()>();
        let server = axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(async move {
            // A dropped sender counts as a stop request too.
            let _ = stopped.await;
        });
        let task = tokio::spawn(async move {
            if let Err(error) = server.await {
                tracing::error!(%error, "HTTP API emulator stopped with an error");
            }
        });
        tracing::info!(address = %local_addr, "HTTP API emulator listening");
        Ok(Gateway {
            local_addr,
            stop,
            task,
        })
    }

    /// The address actually bound (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Graceful shutdown: stops accepting (the port is released), lets requests in flight finish
    /// (including their invocations), closes idle connections, and returns when all is done.
    pub async fn shutdown(self) {
        let _ = self.stop.send(());
        if let Err(error) = self.task.await {
            tracing::error!(%error, "HTTP API emulator task failed");
        }
        tracing::info!(address = %self.local_addr, "HTTP API emulator stopped");
    }
}

// ------------------------------------------------------------------------------------ routing --

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Literal(String),
    Param(String),
    Greedy(String),
}

impl Segment {
    /// Lower is more specific.
    fn rank(&self) -> u8 {
        match self {
            Segment::Literal(_) => 0,
            Segment::Param(_) => 1,
            Segment::Greedy(_) => 2,
        }
    }
}

#[derive(Debug, Clone)]
struct CompiledRoute {
    /// `None` for `ANY`.
    method: Option<String>,
    segments: Vec<Segment>,
    route_key: String,
    function: String,
}

#[derive(Debug, Clone)]
struct Matched<'a> {
    route_key: &'a str,
    function: &'a str,
    path_parameters: BTreeMap<String, String>,
}

#[derive(Debug, Default)]
struct RouteTable {
    routes: Vec<CompiledRoute>,
    default: Option<(String, String)>,
}

impl RouteTable {
    fn new(routes: Vec<Route>) -> anyhow::Result<Self> {
        let mut table = RouteTable::default();
        let mut shapes = std::collections::HashSet::new();
        for route in routes {
            if route.path == DEFAULT_ROUTE {
                if table.default.is_some() {
                    bail!("more than one $default route");
                }
                table.default = Some((DEFAULT_ROUTE.to_owned(), route.function));
                continue;
            }
            let method = route.method.trim().to_ascii_uppercase();
            if method.is_empty() || !method.bytes().all(|b| b.is_ascii_alphabetic()) {
                bail!("route {:?} {:?}: bad method", route.method, route.path);
            }
            let segments = parse_route_path(&route.path)?;
            // Two routes that differ only by parameter names are the same route to API Gateway.
            let shape: Vec<String> = segments
                .iter()
                .map(|s| match s {
                    Segment::Literal(l) => format!("={l}"),
                    Segment::Param(_) => "{}".to_owned(),
                    Segment::Greedy(_) => "{+}".to_owned(),
                })
                .collect();
            if !shapes.insert((method.clone(), shape)) {
                bail!("duplicate route {method} {}", route.path);
            }
            table.routes.push(CompiledRoute {
                route_key: format!("{method} {}", route.path),
                method: (method != "ANY").then_some(method),
                segments,
                function: route.function,
            });
        }
        Ok(table)
    }

    /// The most specific route for `method` and `raw_path` (still percent-encoded).
    fn find(&self, method: &str, raw_path: &str) -> Option<Matched<'_>> {
        let request_segments: Vec<&str> = match raw_path.strip_prefix('/') {
            Some(rest) => rest.split('/').collect(),
            None => return self.default_match(),
        };
        let mut best: Option<(&CompiledRoute, BTreeMap<String, String>)> = None;
        for route in &self.routes {
            if route.method.as_deref().is_some_and(|m| m != method) {
                continue;
            }
            let Some(params) = match_segments(&route.segments, &request_segments) else {
                continue;
            };
            let better = match &best {
                None => true,
                Some((current, _)) => more_specific(route, current),
            };
            if better {
                best = Some((route, params));
            }
        }
        match best {
            Some((route, path_parameters)) => Some(Matched {
                route_key: &route.route_key,
                function: &route.function,
                path_parameters,
            }),
            None => self.default_match(),
        }
    }

    fn default_match(&self) -> Option<Matched<'_>> {
        self.default.as_ref().map(|(key, function)| Matched {
            route_key: key,
            function,
            path_parameters: BTreeMap::new(),
        })
    }
}

fn parse_route_path(path: &str) -> anyhow::Result<Vec<Segment>> {
    let Some(rest) = path.strip_prefix('/') else {
        bail!("route path {path:?} must start with '/' (or be $default)");
    };
    let raw: Vec<&str> = rest.split('/').collect();
    let last = raw.len().saturating_sub(1);
    let mut segments = Vec::with_capacity(raw.len());
    for (i, seg) in raw.iter().enumerate() {
        let segment = match seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
            Some(name) => match name.strip_suffix('+') {
                Some(greedy) if i == last && !greedy.is_empty() => {
                    Segment::Greedy(greedy.to_owned())
                }
                Some(_) => bail!("route path {path:?}: a greedy variable must end the path"),
                None if name.is_empty() || name.contains(['{', '}']) => {
                    bail!("route path {path:?}: bad path variable {seg:?}")
                }
                None => Segment::Param(name.to_owned()),
            },
            None if seg.contains(['{', '}']) => {
                bail!("route path {path:?}: a path variable must be a whole segment")
            }
            None => Segment::Literal((*seg).to_owned()),
        };
        segments.push(segment);
    }
    Ok(segments)
}

fn match_segments(route: &[Segment], request: &[&str]) -> Option<BTreeMap<String, String>> {
    let mut params = BTreeMap::new();
    for (i, segment) in route.iter().enumerate() {
        match segment {
            Segment::Greedy(name) => {
                let rest = request.get(i..)?.join("/");
                if rest.is_empty() {
                    return None;
                }
                params.insert(name.clone(), percent_decode(&rest, false));
                return Some(params);
            }
            Segment::Literal(literal) => {
                let got = request.get(i)?;
                if *got != literal && percent_decode(got, false) != *literal {
                    return None;
                }
            }
            Segment::Param(name) => {
                let got = request.get(i)?;
                if got.is_empty() {
                    return None;
                }
                params.insert(name.clone(), percent_decode(got, false));
            }
        }
    }
    (route.len() == request.len()).then_some(params)
}

/// Segment by segment from the left: literal beats `{param}` beats `{proxy+}`; then an explicit
/// method beats `ANY`.
fn more_specific(a: &CompiledRoute, b: &CompiledRoute) -> bool {
    let ranks = |r: &CompiledRoute| r.segments.iter().map(Segment::rank).collect::<Vec<_>>();
    match ranks(a).cmp(&ranks(b)) {
        std::cmp::Ordering::Less => true,
        std::cmp::Ordering::Greater => false,
        std::cmp::Ordering::Equal => a.method.is_some() && b.method.is_none(),
    }
}

// ------------------------------------------------------------------------------------ serving --

struct Shared {
    router: RouteTable,
    invoker: Arc<dyn Invoker>,
    buckets: Buckets,
    config: GatewayConfig,
    local_addr: SocketAddr,
    next_id: AtomicU32,
}

impl Shared {
    /// API Gateway style: 16 base64 characters ending in `=`, e.g. `JKJaXmPLvHcESHA=`.
    fn request_id(&self) -> String {
        let mut bytes = [0u8; 11];
        // Random first (so ids do not all start alike), a counter last (so they never repeat).
        for b in &mut bytes[..7] {
            *b = fastrand::u8(..);
        }
        bytes[7..].copy_from_slice(&self.next_id.fetch_add(1, Ordering::Relaxed).to_be_bytes());
        base64::engine::general_purpose::STANDARD.encode(bytes)
    }
}

async fn handle(
    State(shared): State<Arc<Shared>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    request: Request,
) -> Result<Response<Body>, Infallible> {
    let started = Instant::now();
    let now = chrono::Utc::now();
    let request_id = shared.request_id();
    let method = request.method().as_str().to_owned();
    let raw_path = request.uri().path().to_owned();
    let raw_query = request.uri().query().unwrap_or("").to_owned();
    let (parts, body) = request.into_parts();
    let cors = shared.config.cors.as_ref();

    let mut route_key = "-".to_owned();
    let preflight = cors.and_then(|c| c.preflight(&method, &parts.headers));
    let mut response = if let Some(preflight) = preflight {
        route_key = "(CORS preflight)".to_owned();
        preflight
    } else {
        match read_body(body, shared.config.max_body_bytes).await {
            BodyRead::TooLarge => {
                let mut response = gateway_error(StatusCode::PAYLOAD_TOO_LARGE);
                response
                    .headers_mut()
                    .insert(header::CONNECTION, HeaderValue::from_static("close"));
                response
            }
            BodyRead::Failed(error) => {
                tracing::debug!(%error, "reading the request body failed");
                gateway_error(StatusCode::BAD_REQUEST)
            }
            BodyRead::Complete(body) => match shared.router.find(&method, &raw_path) {
                None => gateway_error(StatusCode::NOT_FOUND),
                Some(matched) => 'matched: {
                    route_key = matched.route_key.to_owned();
                    if let Err(wait) = shared.buckets.take(matched.route_key) {
                        break 'matched throttled(wait, &request_id);
                    }
                    let event = build_event(&EventInput {
                        route_key: matched.route_key,
                        path_parameters: &matched.path_parameters,
                        method: &method,
                        raw_path: &raw_path,
                        raw_query: &raw_query,
                        headers: &parts.headers,
                        body: &body,
                        peer,
                        local_addr: shared.local_addr,
                        request_id: &request_id,
                        now,
                    });
                    invoke(&shared, matched.function, event).await
                }
            },
        }
    };
    if let Some(cors) = cors {
        let origin = parts.headers.get("origin").and_then(|v| v.to_str().ok());
        cors.decorate(origin, &mut response);
    }

    if let Ok(value) = HeaderValue::from_str(&request_id) {
        response
            .headers_mut()
            .insert(HeaderName::from_static(REQUEST_ID_HEADER), value);
    }
    tracing::info!(
        target: "tally_local::gateway::access",
        request_id = %request_id,
        ip = %peer.ip(),
        method = %method,
        path = %raw_path,
        route_key = %route_key,
        status = response.status().as_u16(),
        latency_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
        "{method} {raw_path} -> {}",
        response.status().as_u16()
    );
    Ok(response)
}

enum BodyRead {
    Complete(Bytes),
    TooLarge,
    Failed(axum::Error),
}

/// Reads the whole body, up to `limit` bytes. An oversized body is drained (up to a cap) so the
/// client reads the 413 instead of a reset connection.
async fn read_body(body: Body, limit: usize) -> BodyRead {
    let mut stream = body.into_data_stream();
    let mut buffer: Vec<u8> = Vec::new();
    let mut total = 0usize;
    while let Some(chunk) = stream.next().await {
        let chunk = match chunk {
            Ok(chunk) => chunk,
            Err(error) if total > limit => {
                tracing::debug!(%error, "oversized request body ended early");
                return BodyRead::TooLarge;
            }
            Err(error) => return BodyRead::Failed(error),
        };
        total = total.saturating_add(chunk.len());
        if total > limit {
            buffer = Vec::new();
            if total > limit.saturating_add(OVERSIZE_DRAIN_BYTES) {
                return BodyRead::TooLarge;
            }
        } else {
            buffer.extend_from_slice(&chunk);
        }
    }
    if total > limit {
        BodyRead::TooLarge
    } else {
        BodyRead::Complete(Bytes::from(buffer))
    }
}

async fn invoke(shared: &Shared, function: &str, event: Value) -> Response<Body> {
    let invoker = Arc::clone(&shared.invoker);
    let name = function.to_owned();
    // Spawned so that neither the integration timeout nor a client hanging up cancels the
    // invocation half-way: as in AWS, the function runs to completion regardless.
    let call = tokio::spawn(async move { invoker.invoke(&name, event).await });
    match tokio::time::timeout(shared.config.integration_timeout, call).await {
        Err(_) => {
            tracing::warn!(
                function,
                timeout_ms = u64::try_from(shared.config.integration_timeout.as_millis())
                    .unwrap_or(u64::MAX),
                "integration timed out"
            );
            gateway_error(StatusCode::SERVICE_UNAVAILABLE)
        }
        Ok(Err(join_error)) => {
            tracing::error!(function, error = %join_error, "invocation task failed");
            gateway_error(StatusCode::INTERNAL_SERVER_ERROR)
        }
        Ok(Ok(Err(error))) => {
            tracing::warn!(function, %error, "invocation failed");
            match error {
                InvokeError::Timeout { .. } => gateway_error(StatusCode::SERVICE_UNAVAILABLE),
                InvokeError::UnknownFunction(_)
                | InvokeError::FunctionError { .. }
                | InvokeError::Crashed(_) => gateway_error(StatusCode::INTERNAL_SERVER_ERROR),
            }
        }
        Ok(Ok(Ok(value))) => match function_response(value) {
            Ok(response) => response,
            Err(problem) => {
                tracing::warn!(function, %problem, "malformed Lambda proxy response");
                gateway_error(StatusCode::INTERNAL_SERVER_ERROR)
            }
        },
    }
}

/// API Gateway's own answers: `{"message":"<reason phrase>"}`.
/// `429` in the API's error shape, with `Retry-After` (whole seconds until a token is back).
fn throttled(wait: Duration, request_id: &str) -> Response<Body> {
    let seconds = wait.as_secs_f64().ceil().max(1.0) as u64;
    let body = json!({
        "error": {
            "code": "TOO_MANY_REQUESTS",
            "message": format!("too many requests; retry after {seconds} s"),
            "details": [],
        },
        "requestId": request_id,
    });
    let mut response = Response::new(Body::from(body.to_string()));
    *response.status_mut() = StatusCode::TOO_MANY_REQUESTS;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    if let Ok(value) = HeaderValue::from_str(&seconds.to_string()) {
        headers.insert(header::RETRY_AFTER, value);
    }
    response
}

fn gateway_error(status: StatusCode) -> Response<Body> {
    let message = match status {
        StatusCode::NOT_FOUND => "Not Found",
        StatusCode::PAYLOAD_TOO_LARGE => "Request Entity Too Large",
        StatusCode::SERVICE_UNAVAILABLE => "Service Unavailable",
        StatusCode::BAD_REQUEST => "Bad Request",
        _ => "Internal Server Error",
    };
    let mut response = Response::new(Body::from(json!({ "message": message }).to_string()));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

// -------------------------------------------------------------------------------- the event ----

struct EventInput<'a> {
    route_key: &'a str,
    path_parameters: &'a BTreeMap<String, String>,
    method: &'a str,
    raw_path: &'a str,
    raw_query: &'a str,
    headers: &'a HeaderMap,
    body: &'a [u8],
    peer: SocketAddr,
    local_addr: SocketAddr,
    request_id: &'a str,
    now: chrono::DateTime<chrono::Utc>,
}

fn build_event(input: &EventInput<'_>) -> Value {
    let mut headers: BTreeMap<String, String> = BTreeMap::new();
    let mut cookies: Vec<String> = Vec::new();
    for (name, value) in input.headers {
        let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
        if name == header::COOKIE {
            cookies.extend(
                value
                    .split(';')
                    .map(str::trim)
                    .filter(|c| !c.is_empty())
                    .map(str::to_owned),
            );
            continue;
        }
        headers
            .entry(name.as_str().to_owned())
            .and_modify(|joined| {
                joined.push(',');
                joined.push_str(&value);
            })
            .or_insert(value);
    }
    // What API Gateway adds on its way to the integration.
    let source_ip = input.peer.ip().to_string();
    headers
        .entry("x-forwarded-for".to_owned())
        .and_modify(|chain| {
            chain.push_str(", ");
            chain.push_str(&source_ip);
        })
        .or_insert_with(|| source_ip.clone());
    headers.insert(
        "x-forwarded-port".to_owned(),
        input.local_addr.port().to_string(),
    );
    headers.insert("x-forwarded-proto".to_owned(), "http".to_owned());
    headers
        .entry("x-amzn-trace-id".to_owned())
        .or_insert_with(|| trace_id(input.now));

    let domain_name = headers.get("host").cloned().unwrap_or_else(|| {
        let ip = match input.local_addr.ip() {
            ip if ip.is_unspecified() => IpAddr::from([127, 0, 0, 1]),
            ip => ip,
        };
        SocketAddr::new(ip, input.local_addr.port()).to_string()
    });
    let user_agent = headers.get("user-agent").cloned().unwrap_or_default();

    let mut event = Map::new();
    event.insert("version".into(), json!("2.0"));
    event.insert("routeKey".into(), json!(input.route_key));
    event.insert("rawPath".into(), json!(input.raw_path));
    event.insert("rawQueryString".into(), json!(input.raw_query));
    if !cookies.is_empty() {
        event.insert("cookies".into(), json!(cookies));
    }
    event.insert("headers".into(), json!(headers));
    let query = query_parameters(input.raw_query);
    if !query.is_empty() {
        event.insert("queryStringParameters".into(), json!(query));
    }
    if !input.path_parameters.is_empty() {
        event.insert("pathParameters".into(), json!(input.path_parameters));
    }
    event.insert(
        "requestContext".into(),
        json!({
            "accountId": ACCOUNT_ID,
            "apiId": API_ID,
            "domainName": domain_name,
            "domainPrefix": domain_prefix(&domain_name),
            "http": {
                "method": input.method,
                "path": input.raw_path,
                "protocol": "HTTP/1.1",
                "sourceIp": source_ip,
                "userAgent": user_agent,
            },
            "requestId": input.request_id,
            "routeKey": input.route_key,
            "stage": "$default",
            "time": input.now.format("%d/%b/%Y:%H:%M:%S +0000").to_string(),
            "timeEpoch": input.now.timestamp_millis(),
        }),
    );
    if !input.body.is_empty() {
        let text = is_text(input.headers)
            .then(|| std::str::from_utf8(input.body).ok())
            .flatten();
        match text {
            Some(text) => {
                event.insert("body".into(), json!(text));
                event.insert("isBase64Encoded".into(), json!(false));
            }
            None => {
                let encoded = base64::engine::general_purpose::STANDARD.encode(input.body);
                event.insert("body".into(), json!(encoded));
                event.insert("isBase64Encoded".into(), json!(true));
            }
        }
    } else {
        event.insert("isBase64Encoded".into(), json!(false));
    }
    Value::Object(event)
}

/// Whether API Gateway passes the body as plain text (else base64).
fn is_text(headers: &HeaderMap) -> bool {
    let encoded = headers.get_all(header::CONTENT_ENCODING).iter().any(|v| {
        let v = String::from_utf8_lossy(v.as_bytes());
        let v = v.trim();
        !v.is_empty() && !v.eq_ignore_ascii_case("identity")
    });
    if encoded {
        return false;
    }
    let Some(content_type) = headers.get(header::CONTENT_TYPE) else {
        return false;
    };
    let content_type = String::from_utf8_lossy(content_type.as_bytes()).to_ascii_lowercase();
    let essence = content_type.split(';').next().unwrap_or("").trim();
    essence.starts_with("text/")
        || matches!(
            essence,
            "application/json"
                | "application/x-ndjson"
                | "application/xml"
                | "application/x-www-form-urlencoded"
        )
        || (essence.starts_with("application/") && essence.ends_with("+json"))
}

/// Decoded query parameters; repeated keys joined with `,`.
fn query_parameters(raw: &str) -> BTreeMap<String, String> {
    let mut params: BTreeMap<String, String> = BTreeMap::new();
    for pair in raw.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let key = percent_decode(key, true);
        let value = percent_decode(value, true);
        params
            .entry(key)
            .and_modify(|joined| {
                joined.push(',');
                joined.push_str(&value);
            })
            .or_insert(value);
    }
    params
}

/// Percent-decoding; invalid escapes are kept as they are, invalid UTF-8 is replaced.
fn percent_decode(input: &str, plus_as_space: bool) -> String {
    let bytes = input.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        match b {
            b'%' => {
                let hex = bytes
                    .get(i + 1..i + 3)
                    .and_then(|h| std::str::from_utf8(h).ok())
                    .and_then(|h| u8::from_str_radix(h, 16).ok());
                match hex {
                    Some(decoded) => {
                        out.push(decoded);
                        i += 3;
                        continue;
                    }
                    None => out.push(b'%'),
                }
            }
            b'+' if plus_as_space => out.push(b' '),
            other => out.push(other),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `abc123.execute-api.us-east-1.amazonaws.com` -> `abc123`; an IP address (or `localhost`)
/// is kept whole.
fn domain_prefix(domain: &str) -> String {
    let host = if let Some(rest) = domain.strip_prefix('[') {
        rest.split(']').next().unwrap_or(rest)
    } else {
        domain.rsplit_once(':').map_or(domain, |(host, _port)| host)
    };
    if host.parse::<IpAddr>().is_ok() {
        return host.to_owned();
    }
    host.split('.').next().unwrap_or(host).to_owned()
}

/// An X-Ray style trace header, as API Gateway adds when the client sent none.
fn trace_id(now: chrono::DateTime<chrono::Utc>) -> String {
    let mut id = format!("Root=1-{:08x}-", now.timestamp());
    for _ in 0..12 {
        let _ = write!(id, "{:02x}", fastrand::u8(..));
    }
    id
}

// ---------------------------------------------------------------------- the function's answer --

/// Maps a function's result to HTTP like API Gateway does for payload format 2.0.
fn function_response(value: Value) -> Result<Response<Body>, String> {
    let object = match value {
        Value::Object(object) if object.contains_key("statusCode") => object,
        other => {
            // No statusCode: API Gateway infers 200 with the JSON as the body.
            let mut response = Response::new(Body::from(other.to_string()));
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            return Ok(response);
        }
    };

    let status = match object.get("statusCode") {
        Some(Value::Number(n)) => n.as_u64(),
        Some(Value::String(s)) => s.trim().parse::<u64>().ok(),
        _ => None,
    }
    .and_then(|n| u16::try_from(n).ok())
    .filter(|n| (100..=599).contains(n))
    .and_then(|n| StatusCode::from_u16(n).ok())
    .ok_or_else(|| {
        format!(
            "statusCode {:?} is not an HTTP status",
            object.get("statusCode")
        )
    })?;

    let base64 = match object.get("isBase64Encoded") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(other) => return Err(format!("isBase64Encoded {other} is not a boolean")),
    };
    let body: Vec<u8> = match object.get("body") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::String(text)) if base64 => base64::engine::general_purpose::STANDARD
            .decode(text.trim())
            .map_err(|e| format!("body is not valid base64: {e}"))?,
        Some(Value::String(text)) => text.clone().into_bytes(),
        Some(other) => return Err(format!("body must be a string, got {other}")),
    };

    let mut headers = HeaderMap::new();
    let multi = match object.get("multiValueHeaders") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(map)) => map.clone(),
        Some(other) => return Err(format!("multiValueHeaders must be an object, got {other}")),
    };
    match object.get("headers") {
        None | Some(Value::Null) => {}
        Some(Value::Object(map)) => {
            for (name, value) in map {
                // As for REST APIs: a name in multiValueHeaders takes its values from there.
                if multi.keys().any(|m| m.eq_ignore_ascii_case(name)) {
                    continue;
                }
                if let Some(text) = header_text(value)? {
                    append_header(&mut headers, name, &text)?;
                }
            }
        }
        Some(other) => return Err(format!("headers must be an object, got {other}")),
    }
    for (name, values) in &multi {
        let values = match values {
            Value::Array(values) => values.as_slice(),
            Value::Null => continue,
            other => {
                return Err(format!(
                    "multiValueHeaders.{name} must be an array, got {other}"
                ))
            }
        };
        for value in values {
            if let Some(text) = header_text(value)? {
                append_header(&mut headers, name, &text)?;
            }
        }
    }
    match object.get("cookies") {
        None | Some(Value::Null) => {}
        Some(Value::Array(cookies)) => {
            for cookie in cookies {
                let Value::String(cookie) = cookie else {
                    return Err(format!("cookies must be strings, got {cookie}"));
                };
                append_header(&mut headers, "set-cookie", cookie)?;
            }
        }
        Some(other) => return Err(format!("cookies must be an array, got {other}")),
    }
    // Framing is the gateway's business (hyper computes content-length from the body).
    for hop in [
        header::CONTENT_LENGTH,
        header::TRANSFER_ENCODING,
        header::CONNECTION,
    ] {
        headers.remove(hop);
    }

    let mut response = Response::new(Body::from(body));
    *response.status_mut() = status;
    *response.headers_mut() = headers;
    Ok(response)
}

fn header_text(value: &Value) -> Result<Option<String>, String> {
    match value {
        Value::Null => Ok(None),
        Value::String(s) => Ok(Some(s.clone())),
        Value::Number(n) => Ok(Some(n.to_string())),
        Value::Bool(b) => Ok(Some(b.to_string())),
        other => Err(format!("header value {other} is not a string")),
    }
}

fn append_header(headers: &mut HeaderMap, name: &str, value: &str) -> Result<(), String> {
    let name = HeaderName::from_bytes(name.as_bytes())
        .map_err(|_| format!("invalid header name {name:?}"))?;
    let value =
        HeaderValue::from_str(value).map_err(|_| format!("invalid value for header {name}"))?;
    headers.append(name, value);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(routes: &[(&str, &str, &str)]) -> anyhow::Result<RouteTable> {
        RouteTable::new(
            routes
                .iter()
                .map(|(m, p, f)| Route::new(*m, *p, *f))
                .collect(),
        )
    }

    #[test]
    fn specificity() -> anyhow::Result<()> {
        let t = table(&[
            ("ANY", "/{proxy+}", "greedy"),
            ("POST", "/v1/webhooks/{source}", "generic"),
            ("POST", "/v1/webhooks/facebook", "facebook"),
            ("ANY", "/v1/webhooks/facebook", "facebook-any"),
            ("GET", "/v1/{a}/{b}", "params"),
        ])?;
        let f = |m: &str, p: &str| t.find(m, p).map(|x| x.function.to_owned());
        assert_eq!(
            f("POST", "/v1/webhooks/facebook").as_deref(),
            Some("facebook")
        );
        assert_eq!(
            f("GET", "/v1/webhooks/facebook").as_deref(),
            Some("facebook-any")
        );
        assert_eq!(f("POST", "/v1/webhooks/shop").as_deref(), Some("generic"));
        assert_eq!(f("GET", "/v1/webhooks/shop").as_deref(), Some("params"));
        assert_eq!(f("DELETE", "/v1/webhooks/shop").as_deref(), Some("greedy"));
        assert_eq!(f("POST", "/v1/webhooks/").as_deref(), Some("greedy"));
        assert_eq!(f("POST", "/").as_deref(), None);
        Ok(())
    }

    #[test]
    fn greedy_and_params_are_decoded() -> anyhow::Result<()> {
        let t = table(&[("GET", "/files/{proxy+}", "f"), ("GET", "/u/{id}", "u")])?;
        let m = t
            .find("GET", "/files/a%20b/c")
            .ok_or_else(|| anyhow::anyhow!("no match"))?;
        assert_eq!(
            m.path_parameters.get("proxy").map(String::as_str),
            Some("a b/c")
        );
        assert!(t.find("GET", "/files").is_none());
        let m = t
            .find("GET", "/u/a+b%2Fc")
            .ok_or_else(|| anyhow::anyhow!("no match"))?;
        assert_eq!(
            m.path_parameters.get("id").map(String::as_str),
            Some("a+b/c")
        );
        Ok(())
    }

    #[test]
    fn bad_routes_are_refused() {
        assert!(table(&[("GET", "/a/{p+}/b", "x")]).is_err());
        assert!(table(&[("GET", "a", "x")]).is_err());
        assert!(table(&[("GET", "/a/x{p}", "x")]).is_err());
        assert!(table(&[("GET", "/a/{p}", "x"), ("get", "/a/{q}", "y")]).is_err());
        assert!(table(&[("GET", "/a/{p}", "x"), ("POST", "/a/{q}", "y")]).is_ok());
    }

    #[test]
    fn query_and_decoding() {
        let q = query_parameters("a=1&a=2&b=x%20y+z&c&&d=%zz");
        assert_eq!(q.get("a").map(String::as_str), Some("1,2"));
        assert_eq!(q.get("b").map(String::as_str), Some("x y z"));
        assert_eq!(q.get("c").map(String::as_str), Some(""));
        assert_eq!(q.get("d").map(String::as_str), Some("%zz"));
        assert_eq!(
            domain_prefix("abc.execute-api.us-east-1.amazonaws.com"),
            "abc"
        );
        assert_eq!(domain_prefix("127.0.0.1:3000"), "127.0.0.1");
        assert_eq!(domain_prefix("[::1]:3000"), "::1");
        assert_eq!(domain_prefix("localhost:3000"), "localhost");
    }
}
