//! The Runtime API (2018-06-01) server of one execution environment.
//!
//! Every process gets its own server on a fresh loopback port, so nothing a dead process left
//! behind (a pending `/next` long-poll, a late `/response`) can reach its successor.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::prelude::{Engine as _, BASE64_STANDARD};
use futures::channel::{mpsc, oneshot};
use futures::StreamExt as _;
use serde_json::{json, Value};
use tokio::task::JoinHandle;

/// Lambda's limit for a buffered (RequestResponse) response payload, in bytes.
pub(crate) const MAX_RESPONSE_BYTES: usize = 6_291_556;
/// What the server reads at most from one request body (streamed responses may be larger).
const BODY_LIMIT: usize = 32 * 1024 * 1024;
/// How long a graceful stop may take before the server task is aborted.
const STOP_GRACE: Duration = Duration::from_secs(2);

const STREAM_ERROR_TYPE: &str = "Lambda-Runtime-Function-Error-Type: ";
const STREAM_ERROR_BODY: &str = "Lambda-Runtime-Function-Error-Body: ";
const HTTP_INTEGRATION_RESPONSE: &str = "application/vnd.awslambda.http-integration-response";

/// What the Runtime API (and the process watcher) tell the function's actor.
#[derive(Debug)]
pub(crate) enum EnvEvent {
    /// The runtime called `/next` (the first call ends init).
    NextCalled(Instant),
    /// `/next` handed out this invocation.
    Delivered { request_id: String, at: Instant },
    /// `/response` for the current invocation; `Err((type, message))` if it is a failure
    /// (too large, or a streamed response that ended with an error trailer).
    Response {
        request_id: String,
        result: Result<Value, (String, String)>,
    },
    /// `/error` for the current invocation.
    Error {
        request_id: String,
        error_type: String,
        error_message: String,
    },
    /// `/init/error`.
    InitError {
        error_type: String,
        error_message: String,
    },
    /// The process exited (the text is its exit status).
    Exited(String),
}

/// One invocation waiting for the runtime's `/next`.
pub(crate) struct Delivery {
    pub(crate) request_id: String,
    pub(crate) event: Vec<u8>,
    pub(crate) trace_id: String,
}

pub(crate) struct ApiShared {
    arn: String,
    timeout: Duration,
    events: mpsc::UnboundedSender<EnvEvent>,
    deliveries: futures::lock::Mutex<mpsc::UnboundedReceiver<Delivery>>,
    /// The invocation handed out and not answered yet.
    current: Mutex<Option<String>>,
}

impl ApiShared {
    pub(crate) fn new(
        function: &str,
        timeout: Duration,
        events: mpsc::UnboundedSender<EnvEvent>,
        deliveries: mpsc::UnboundedReceiver<Delivery>,
    ) -> Self {
        Self {
            arn: function_arn(function),
            timeout,
            events,
            deliveries: futures::lock::Mutex::new(deliveries),
            current: Mutex::new(None),
        }
    }

    fn send(&self, event: EnvEvent) {
        let _ = self.events.unbounded_send(event);
    }

    /// Ends the current invocation if it is `request_id`; false when it is not current.
    fn take_current(&self, request_id: &str) -> bool {
        let mut current = self.current.lock().unwrap_or_else(PoisonError::into_inner);
        if current.as_deref() == Some(request_id) {
            *current = None;
            true
        } else {
            false
        }
    }
}

pub(crate) fn function_arn(function: &str) -> String {
    format!("arn:aws:lambda:us-east-1:123456789012:function:{function}")
}

/// A running Runtime API server.
pub(crate) struct ApiServer {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

impl ApiServer {
    pub(crate) async fn start(shared: Arc<ApiShared>) -> std::io::Result<Self> {
        let listener = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
        let addr = listener.local_addr()?;
        let app = Router::new()
            .route("/2018-06-01/runtime/invocation/next", get(next))
            .route(
                "/2018-06-01/runtime/invocation/{id}/response",
                post(response),
            )
            .route("/2018-06-01/runtime/invocation/{id}/error", post(error))
            .route("/2018-06-01/runtime/init/error", post(init_error))
            .layer(DefaultBodyLimit::max(BODY_LIMIT))
            .with_state(shared);
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let served = axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = stopped.await;
                })
                .await;
            if let Err(err) = served {
                tracing::warn!(error = %err, "runtime API server failed");
            }
        });
        Ok(Self {
            addr,
            stop: Some(stop),
            task,
        })
    }

    pub(crate) fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops accepting, lets open requests finish (pending `/next` polls end once the delivery
    /// channel is closed), and closes the listener.
    pub(crate) async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if tokio::time::timeout(STOP_GRACE, &mut self.task)
            .await
            .is_err()
        {
            self.task.abort();
            let _ = (&mut self.task).await;
        }
    }
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn next(State(shared): State<Arc<ApiShared>>) -> Response {
    shared.send(EnvEvent::NextCalled(Instant::now()));
    let delivery = {
        let mut deliveries = shared.deliveries.lock().await;
        deliveries.next().await
    };
    let Some(delivery) = delivery else {
        return error_response(
            StatusCode::GONE,
            "Runtime.Shutdown",
            "execution environment is shutting down",
        );
    };
    *shared
        .current
        .lock()
        .unwrap_or_else(PoisonError::into_inner) = Some(delivery.request_id.clone());
    let deadline_ms = chrono::Utc::now().timestamp_millis()
        + i64::try_from(shared.timeout.as_millis()).unwrap_or(i64::MAX / 2);
    shared.send(EnvEvent::Delivered {
        request_id: delivery.request_id.clone(),
        at: Instant::now(),
    });
    let built = Response::builder()
        .status(StatusCode::OK)
        .header("Content-Type", "application/json")
        .header(
            "Lambda-Runtime-Aws-Request-Id",
            delivery.request_id.as_str(),
        )
        .header("Lambda-Runtime-Deadline-Ms", deadline_ms.to_string())
        .header("Lambda-Runtime-Invoked-Function-Arn", shared.arn.as_str())
        .header("Lambda-Runtime-Trace-Id", delivery.trace_id.as_str())
        .body(Body::from(delivery.event));
    match built {
        Ok(response) => response,
        Err(err) => error_response(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Runtime.Emulator",
            &err.to_string(),
        ),
    }
}

async fn response(
    State(shared): State<Arc<ApiShared>>,
    Path(request_id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if !shared.take_current(&request_id) {
        return invalid_request_id();
    }
    let streaming = header(&headers, "lambda-runtime-function-response-mode")
        .is_some_and(|mode| mode.eq_ignore_ascii_case("streaming"));
    let (result, status) = if streaming {
        let content_type = header(&headers, "content-type").unwrap_or_default();
        (decode_streamed(&body, &content_type), StatusCode::ACCEPTED)
    } else if body.len() > MAX_RESPONSE_BYTES {
        let message = format!(
            "Response payload size ({} bytes) exceeded maximum allowed payload size ({MAX_RESPONSE_BYTES} bytes).",
            body.len()
        );
        (
            Err(("Function.ResponseSizeTooLarge".to_owned(), message)),
            StatusCode::PAYLOAD_TOO_LARGE,
        )
    } else {
        (Ok(decode_payload(&body)), StatusCode::ACCEPTED)
    };
    shared.send(EnvEvent::Response { request_id, result });
    accepted(status)
}

async fn error(
    State(shared): State<Arc<ApiShared>>,
    Path(request_id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if !shared.take_current(&request_id) {
        return invalid_request_id();
    }
    let (error_type, error_message) = decode_error(&headers, &body);
    shared.send(EnvEvent::Error {
        request_id,
        error_type,
        error_message,
    });
    accepted(StatusCode::ACCEPTED)
}

async fn init_error(
    State(shared): State<Arc<ApiShared>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (error_type, error_message) = decode_error(&headers, &body);
    shared.send(EnvEvent::InitError {
        error_type,
        error_message,
    });
    accepted(StatusCode::ACCEPTED)
}

fn header(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

fn accepted(status: StatusCode) -> Response {
    (status, Json(json!({"status": "OK"}))).into_response()
}

fn invalid_request_id() -> Response {
    error_response(
        StatusCode::BAD_REQUEST,
        "InvalidRequestID",
        "Invalid request ID (not the invocation in flight)",
    )
}

fn error_response(status: StatusCode, error_type: &str, message: &str) -> Response {
    (
        status,
        Json(json!({"errorType": error_type, "errorMessage": message})),
    )
        .into_response()
}

/// A buffered payload: JSON if it parses, otherwise the text; an empty body is `null`.
fn decode_payload(body: &[u8]) -> Value {
    if body.is_empty() {
        return Value::Null;
    }
    serde_json::from_slice(body)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(body).into_owned()))
}

/// `{"errorType", "errorMessage"}` from an error post; falls back to the error-type header and
/// the raw body.
fn decode_error(headers: &HeaderMap, body: &[u8]) -> (String, String) {
    let parsed: Option<Value> = serde_json::from_slice(body).ok();
    let field = |name: &str| {
        parsed
            .as_ref()
            .and_then(|v| v.get(name))
            .and_then(Value::as_str)
            .map(str::to_owned)
    };
    let error_type = field("errorType")
        .or_else(|| header(headers, "lambda-runtime-function-error-type"))
        .unwrap_or_else(|| "Unhandled".to_owned());
    let error_message =
        field("errorMessage").unwrap_or_else(|| String::from_utf8_lossy(body).into_owned());
    (error_type, error_message)
}

/// A streamed response (`Lambda-Runtime-Function-Response-Mode: streaming`) as `lambda_runtime`
/// 1.x sends it: for HTTP integrations a JSON metadata prelude (`statusCode`, `headers`,
/// `cookies`), eight NUL bytes, then the body; a mid-stream error is appended to the body as
/// `Lambda-Runtime-Function-Error-Type: …\r\nLambda-Runtime-Function-Error-Body: <base64>\r\n`.
/// HTTP-integration responses become an API Gateway payload-2.0 result object.
pub(crate) fn decode_streamed(body: &[u8], content_type: &str) -> Result<Value, (String, String)> {
    let body = match split_error_trailer(body) {
        (_, Some(error)) => return Err(error),
        (body, None) => body,
    };
    if !content_type.starts_with(HTTP_INTEGRATION_RESPONSE) {
        return Ok(decode_payload(body));
    }
    let delimiter = [0u8; 8];
    let Some(split) = body.windows(delimiter.len()).position(|w| w == delimiter) else {
        return Ok(decode_payload(body));
    };
    let prelude: Value = serde_json::from_slice(&body[..split]).unwrap_or(Value::Null);
    let payload = &body[split + delimiter.len()..];
    let mut headers = serde_json::Map::new();
    if let Some(map) = prelude.get("headers").and_then(Value::as_object) {
        for (name, value) in map {
            let joined = match value {
                Value::Array(values) => values
                    .iter()
                    .filter_map(Value::as_str)
                    .collect::<Vec<_>>()
                    .join(","),
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            headers.insert(name.clone(), Value::String(joined));
        }
    }
    let (body_value, base64) = match std::str::from_utf8(payload) {
        Ok(text) => (text.to_owned(), false),
        Err(_) => (BASE64_STANDARD.encode(payload), true),
    };
    Ok(json!({
        "statusCode": prelude.get("statusCode").cloned().unwrap_or(json!(200)),
        "headers": headers,
        "cookies": prelude.get("cookies").cloned().unwrap_or(json!([])),
        "body": body_value,
        "isBase64Encoded": base64,
    }))
}

type StreamError = (String, String);

fn split_error_trailer(body: &[u8]) -> (&[u8], Option<StreamError>) {
    let needle = STREAM_ERROR_TYPE.as_bytes();
    let Some(start) = body.windows(needle.len()).rposition(|w| w == needle) else {
        return (body, None);
    };
    let tail = String::from_utf8_lossy(&body[start..]).into_owned();
    let mut error_type = None;
    let mut error_body = None;
    for line in tail.split("\r\n") {
        if let Some(value) = line.strip_prefix(STREAM_ERROR_TYPE) {
            error_type = Some(value.trim().to_owned());
        } else if let Some(value) = line.strip_prefix(STREAM_ERROR_BODY) {
            let decoded = BASE64_STANDARD
                .decode(value.trim())
                .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
                .unwrap_or_else(|_| value.trim().to_owned());
            error_body = Some(decoded);
        }
    }
    match (error_type, error_body) {
        (Some(error_type), Some(message)) => (&body[..start], Some((error_type, message))),
        _ => (body, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streamed_http_response_becomes_payload_v2() -> Result<(), String> {
        let mut body = br#"{"statusCode":201,"headers":{"content-type":"text/plain","x-a":["1","2"]},"cookies":["a=b"]}"#.to_vec();
        body.extend_from_slice(&[0u8; 8]);
        body.extend_from_slice(b"hello ");
        body.extend_from_slice(b"world");
        let value =
            decode_streamed(&body, HTTP_INTEGRATION_RESPONSE).map_err(|e| format!("{e:?}"))?;
        assert_eq!(value["statusCode"], 201);
        assert_eq!(value["headers"]["x-a"], "1,2");
        assert_eq!(value["cookies"][0], "a=b");
        assert_eq!(value["body"], "hello world");
        assert_eq!(value["isBase64Encoded"], false);
        Ok(())
    }

    #[test]
    fn streamed_error_trailer_is_a_function_error() {
        let mut body = b"{}".to_vec();
        body.extend_from_slice(&[0u8; 8]);
        body.extend_from_slice(b"partial");
        body.extend_from_slice(
            format!(
                "{STREAM_ERROR_TYPE}Runtime.StreamError\r\n{STREAM_ERROR_BODY}{}\r\n",
                BASE64_STANDARD.encode("boom")
            )
            .as_bytes(),
        );
        assert_eq!(
            decode_streamed(&body, HTTP_INTEGRATION_RESPONSE),
            Err(("Runtime.StreamError".to_owned(), "boom".to_owned()))
        );
    }

    #[test]
    fn buffered_payloads() {
        assert_eq!(decode_payload(b""), Value::Null);
        assert_eq!(decode_payload(br#"{"a":1}"#), json!({"a": 1}));
        assert_eq!(decode_payload(b"plain"), json!("plain"));
    }
}
