//! A small HTTP request/response model for the handlers, so route logic is tested without
//! Lambda types; `lambda` converts to and from API Gateway payload 2.0.

use std::collections::HashMap;

use serde_json::Value;
use tracing::{info, warn, Instrument};
use uuid::Uuid;

use crate::error::ApiError;
use crate::observability::Metrics;
use crate::request_cost::RequestCost;
use crate::request_latency::{LatencyBuffer, UNMATCHED};

#[derive(Debug, Clone, Default)]
pub struct HttpRequest {
    pub method: String,
    pub path: String,
    /// Lowercased names.
    pub headers: HashMap<String, String>,
    pub query: HashMap<String, String>,
    pub body: Vec<u8>,
    pub request_id: String,
}

impl HttpRequest {
    /// A request with no headers, parameters or body; the `with_*` methods add them.
    pub fn new(method: &str, path: &str) -> Self {
        Self {
            method: method.to_owned(),
            path: path.to_owned(),
            ..Self::default()
        }
    }

    pub fn with_query(mut self, params: &[(&str, &str)]) -> Self {
        self.query.extend(
            params
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
        );
        self
    }

    /// Sets a header, replacing one of the same name.
    pub fn with_header(mut self, name: &str, value: impl Into<String>) -> Self {
        self.headers.insert(name.to_ascii_lowercase(), value.into());
        self
    }

    pub fn with_bearer(self, key: &str) -> Self {
        self.with_header("authorization", format!("Bearer {key}"))
    }

    /// A JSON body, labelled as such.
    pub fn with_json(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = body.into();
        self.with_header("content-type", "application/json")
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .get(&name.to_ascii_lowercase())
            .map(String::as_str)
    }

    pub fn query(&self, name: &str) -> Option<&str> {
        self.query.get(name).map(String::as_str)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct HttpResponse {
    pub status: u16,
    pub headers: Vec<(&'static str, String)>,
    pub body: String,
}

impl HttpResponse {
    pub fn json(status: u16, body: &Value) -> Self {
        Self {
            status,
            headers: vec![("content-type", "application/json".into())],
            body: body.to_string(),
        }
    }

    pub fn text(status: u16, body: String) -> Self {
        Self::text_as(status, "text/plain; charset=utf-8", body)
    }

    /// A text body of a given `text/*` media type.
    pub fn text_as(status: u16, content_type: &str, body: String) -> Self {
        Self {
            status,
            headers: vec![
                ("content-type", content_type.to_owned()),
                ("x-content-type-options", "nosniff".into()),
            ],
            body,
        }
    }

    pub fn error(error: &ApiError, request_id: &str) -> Self {
        let mut response = Self::json(error.status(), &error.body(request_id));
        if let ApiError::MethodNotAllowed { allow } = error {
            response.headers.push(("allow", (*allow).to_owned()));
        }
        response
    }

    pub fn with_header(mut self, name: &'static str, value: String) -> Self {
        self.headers.push((name, value));
        self
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// One raw path segment, percent-decoded; `None` when empty, nested or not UTF-8.
pub fn path_segment(raw: &str) -> Option<String> {
    if raw.is_empty() || raw.contains('/') {
        return None;
    }
    percent_encoding::percent_decode_str(raw)
        .decode_utf8()
        .ok()
        .map(|s| s.into_owned())
}

/// The request's `X-Correlation-Id` when it is well-formed, else a new UUIDv7.
pub fn correlation_id(request: &HttpRequest) -> String {
    request
        .header("x-correlation-id")
        .map(str::trim)
        .filter(|id| {
            !id.is_empty()
                && id.len() <= 128
                && id
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"._:@/+=-".contains(&b))
        })
        .map_or_else(|| Uuid::now_v7().to_string(), str::to_owned)
}

/// Serves one request the same way in every HTTP function: a span carrying the correlation id,
/// EMF metrics for `function` (flushed once answered, with the request's DynamoDB cost and
/// `RequestLatency`), `route`'s outcome turned into the response by [`respond`], and its time
/// recorded in `latencies` under the `route` property the handler set ([`UNMATCHED`] if none).
pub async fn serve(
    function: &'static str,
    request: &HttpRequest,
    latencies: Option<&LatencyBuffer>,
    route: impl AsyncFnOnce(&str, &mut Metrics) -> Result<HttpResponse, ApiError>,
) -> HttpResponse {
    let correlation_id = correlation_id(request);
    let span = tracing::info_span!(
        "request",
        correlation_id = %correlation_id,
        request_id = %request.request_id,
    );
    async {
        let started = std::time::Instant::now();
        let mut metrics = Metrics::new(function);
        metrics.property("correlationId", correlation_id.as_str());
        let (outcome, cost) = RequestCost::measure(route(&correlation_id, &mut metrics)).await;
        cost.add_to(&mut metrics);
        let response = respond(outcome, &request.request_id, &correlation_id, &mut metrics);
        let elapsed = started.elapsed();
        metrics.duration("RequestLatency", started);
        if let Some(latencies) = latencies {
            let route = metrics.text_property("route").unwrap_or(UNMATCHED);
            latencies.record(route, elapsed).await;
        }
        metrics.flush();
        response
    }
    .instrument(span)
    .await
}

/// The response to a route's outcome: an error is logged (a warning when it is the server's
/// fault), counted, and answered in its one shape; the correlation id is echoed either way.
fn respond(
    outcome: Result<HttpResponse, ApiError>,
    request_id: &str,
    correlation_id: &str,
    metrics: &mut Metrics,
) -> HttpResponse {
    let response = match outcome {
        Ok(response) => response,
        Err(error) => {
            if error.status() >= 500 {
                warn!(
                    status = error.status(),
                    code = error.code(),
                    "request failed"
                );
                metrics.count("ServerErrors", 1);
            } else {
                info!(
                    status = error.status(),
                    code = error.code(),
                    "request refused"
                );
                metrics.count("ClientErrors", 1);
            }
            HttpResponse::error(&error, request_id)
        }
    };
    response.with_header("x-correlation-id", correlation_id.to_owned())
}

/// Conversion to and from `lambda_http` (API Gateway HTTP API, payload 2.0).
pub mod lambda {
    use lambda_http::request::RequestContext;
    use lambda_http::{Body, Request, RequestExt, Response};

    use super::{HttpRequest, HttpResponse};

    pub fn from_lambda(request: Request) -> HttpRequest {
        let request_id = match request.request_context_ref() {
            Some(RequestContext::ApiGatewayV2(ctx)) => ctx.request_id.clone(),
            _ => None,
        }
        .or_else(|| request.lambda_context_ref().map(|c| c.request_id.clone()))
        .unwrap_or_default();
        let query = request
            .query_string_parameters_ref()
            .map(|q| {
                q.iter()
                    .map(|(k, v)| (k.to_owned(), v.to_owned()))
                    .collect()
            })
            .unwrap_or_default();
        let headers = request
            .headers()
            .iter()
            .filter_map(|(k, v)| {
                Some((k.as_str().to_ascii_lowercase(), v.to_str().ok()?.to_owned()))
            })
            .collect();
        HttpRequest {
            method: request.method().as_str().to_owned(),
            path: request.uri().path().to_owned(),
            headers,
            query,
            body: request.body().as_ref().to_vec(),
            request_id,
        }
    }

    pub fn to_lambda(response: HttpResponse) -> Result<Response<Body>, lambda_http::Error> {
        let mut builder = Response::builder().status(response.status);
        for (name, value) in response.headers {
            builder = builder.header(name, value);
        }
        Ok(builder.body(Body::Text(response.body))?)
    }
}
