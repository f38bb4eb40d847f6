//! A metering reverse proxy: one listener per caller and emulator. It forwards every request
//! unchanged (except that DynamoDB is asked for capacity by index), returns the answer
//! unchanged, and records what the exchange bills.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::{Context, Result};
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Router;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use super::classify::{self, Exchange, Service};
use super::Meter;

/// Larger than any request or answer of the stack (a 5 MiB batch, a 10 MiB query page).
const MAX_BODY: usize = 64 * 1024 * 1024;

/// Headers the proxy sets itself.
const HOP_BY_HOP: &[&str] = &[
    "host",
    "content-length",
    "connection",
    "transfer-encoding",
    "keep-alive",
];

/// Where a proxy forwards to.
#[derive(Debug, Clone)]
pub struct Upstream {
    pub service: Service,
    /// Base URL, e.g. `http://127.0.0.1:8000`.
    pub endpoint: String,
}

struct Shared {
    caller: String,
    upstream: Upstream,
    meter: Meter,
    http: reqwest::Client,
}

/// A running proxy; stops when dropped.
pub struct MeteringProxy {
    pub endpoint: String,
    task: JoinHandle<()>,
}

impl MeteringProxy {
    /// Listens on a loopback port and bills what `caller` does on `upstream` to `meter`.
    pub async fn start(caller: &str, upstream: Upstream, meter: Meter) -> Result<Self> {
        let listener = TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0)))
            .await
            .context("binding a metering proxy")?;
        let endpoint = format!("http://{}", listener.local_addr()?);
        let shared = Arc::new(Shared {
            caller: caller.to_owned(),
            upstream,
            meter,
            http: reqwest::Client::builder()
                .pool_max_idle_per_host(64)
                .build()?,
        });
        let app = Router::new().fallback(forward).with_state(shared);
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Self { endpoint, task })
    }
}

impl Drop for MeteringProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn forward(State(shared): State<Arc<Shared>>, request: Request) -> Response {
    match exchange(&shared, request).await {
        Ok(response) => response,
        Err(e) => {
            tracing::warn!(caller = %shared.caller, upstream = %shared.upstream.endpoint, error = %format!("{e:#}"), "metering proxy could not forward");
            (
                StatusCode::BAD_GATEWAY,
                "metering proxy: upstream unreachable",
            )
                .into_response()
        }
    }
}

async fn exchange(shared: &Shared, request: Request) -> Result<Response> {
    let (parts, body) = request.into_parts();
    let body = axum::body::to_bytes(body, MAX_BODY)
        .await
        .context("reading the request")?;
    let target = parts
        .headers
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let sent = match shared.upstream.service {
        Service::DynamoDb => classify::ask_for_index_capacity(target.as_deref(), &body)
            .map(Bytes::from)
            .unwrap_or_else(|| body.clone()),
        _ => body.clone(),
    };
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let url = format!("{}{path}", shared.upstream.endpoint);
    let mut forwarded = shared.http.request(parts.method.clone(), &url).body(sent);
    for (name, value) in &parts.headers {
        if !HOP_BY_HOP.contains(&name.as_str()) {
            forwarded = forwarded.header(name, value);
        }
    }
    let answer = forwarded.send().await.context("forwarding")?;
    let status = answer.status();
    let headers = answer.headers().clone();
    let answer_body = answer.bytes().await.context("reading the answer")?;
    let units = classify::units(
        shared.upstream.service,
        &Exchange {
            method: parts.method.as_str(),
            target: target.as_deref(),
            request: &body,
            status: status.as_u16(),
            response: &answer_body,
        },
    );
    shared.meter.record(&shared.caller, units);
    let mut response = Response::builder().status(status);
    for (name, value) in &headers {
        if !HOP_BY_HOP.contains(&name.as_str()) {
            response = response.header(name, value);
        }
    }
    Ok(response.body(Body::from(answer_body))?)
}
