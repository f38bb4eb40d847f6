//! The HTTP API emulator against a fake function: routing, the payload-2.0 event, response
//! mapping, gateway errors, the body limit and graceful shutdown.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{anyhow, ensure, Context as _};
use async_trait::async_trait;
use base64::Engine as _;
use serde_json::{json, Value};
use tally_local::gateway::{Gateway, GatewayConfig, Route, MAX_BODY_BYTES};
use tally_local::invoke::{InvokeError, Invoker};

type Answer = dyn Fn(&str, &Value) -> Result<Value, InvokeError> + Send + Sync;

/// Records every event and answers with `answer(function, event)` after `delay`.
struct Fake {
    calls: Mutex<Vec<(String, Value)>>,
    answer: Box<Answer>,
    delay: Duration,
}

impl Fake {
    fn new(
        answer: impl Fn(&str, &Value) -> Result<Value, InvokeError> + Send + Sync + 'static,
    ) -> Arc<Self> {
        Self::slow(Duration::ZERO, answer)
    }

    fn slow(
        delay: Duration,
        answer: impl Fn(&str, &Value) -> Result<Value, InvokeError> + Send + Sync + 'static,
    ) -> Arc<Self> {
        Arc::new(Self {
            calls: Mutex::new(Vec::new()),
            answer: Box::new(answer),
            delay,
        })
    }

    /// Answers 200 with the function's name as the body.
    fn echo() -> Arc<Self> {
        Self::new(|function, _| Ok(json!({ "statusCode": 200, "body": function })))
    }

    fn calls(&self) -> anyhow::Result<Vec<(String, Value)>> {
        Ok(self.calls.lock().map_err(|_| anyhow!("poisoned"))?.clone())
    }

    /// The only call so far.
    fn single(&self) -> anyhow::Result<(String, Value)> {
        let calls = self.calls()?;
        ensure!(calls.len() == 1, "expected one call, got {}", calls.len());
        calls.into_iter().next().context("no call")
    }

    fn last_event(&self) -> anyhow::Result<Value> {
        self.calls()?
            .pop()
            .map(|(_, event)| event)
            .context("no call")
    }
}

#[async_trait]
impl Invoker for Fake {
    async fn invoke(&self, function: &str, event: Value) -> Result<Value, InvokeError> {
        if let Ok(mut calls) = self.calls.lock() {
            calls.push((function.to_owned(), event.clone()));
        }
        if !self.delay.is_zero() {
            tokio::time::sleep(self.delay).await;
        }
        (self.answer)(function, &event)
    }
}

fn webhook_routes() -> Vec<Route> {
    vec![
        Route::new("POST", "/v1/webhooks/{source}", "generic"),
        Route::new("POST", "/v1/webhooks/facebook", "facebook"),
        Route::new("GET", "/v1/webhooks/facebook", "facebook-verify"),
        Route::new("POST", "/v1/events", "ingest"),
        Route::new("ANY", "/files/{proxy+}", "files"),
    ]
}

fn loopback() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

async fn start(routes: Vec<Route>, fake: &Arc<Fake>) -> anyhow::Result<(Gateway, String)> {
    start_with(routes, fake, GatewayConfig::default()).await
}

async fn start_with(
    routes: Vec<Route>,
    fake: &Arc<Fake>,
    config: GatewayConfig,
) -> anyhow::Result<(Gateway, String)> {
    let invoker: Arc<dyn Invoker> = fake.clone();
    let gateway = Gateway::bind_with_config(loopback(), routes, invoker, config).await?;
    let base = format!("http://{}", gateway.local_addr());
    Ok((gateway, base))
}

fn client() -> anyhow::Result<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()?)
}

fn header<'a>(response: &'a reqwest::Response, name: &str) -> Option<&'a str> {
    response.headers().get(name).and_then(|v| v.to_str().ok())
}

#[tokio::test]
async fn literal_routes_beat_path_variables() -> anyhow::Result<()> {
    let fake = Fake::echo();
    let (gateway, base) = start(webhook_routes(), &fake).await?;
    let http = client()?;

    let response = http
        .post(format!("{base}/v1/webhooks/facebook"))
        .send()
        .await?;
    assert_eq!(response.status(), 200);
    assert_eq!(response.text().await?, "facebook");
    let event = fake.last_event()?;
    assert_eq!(event["routeKey"], "POST /v1/webhooks/facebook");
    assert_eq!(
        event["requestContext"]["routeKey"],
        "POST /v1/webhooks/facebook"
    );
    assert!(
        event.get("pathParameters").is_none(),
        "literal route has no path parameters"
    );

    let response = http
        .get(format!("{base}/v1/webhooks/facebook"))
        .send()
        .await?;
    assert_eq!(response.text().await?, "facebook-verify");

    let response = http.post(format!("{base}/v1/webhooks/shop")).send().await?;
    assert_eq!(response.text().await?, "generic");
    let event = fake.last_event()?;
    assert_eq!(event["routeKey"], "POST /v1/webhooks/{source}");
    assert_eq!(event["pathParameters"], json!({ "source": "shop" }));
    assert_eq!(event["rawPath"], "/v1/webhooks/shop");
    assert_eq!(event["requestContext"]["http"]["path"], "/v1/webhooks/shop");

    // Path parameters are URL-decoded; the raw path is not.
    http.post(format!("{base}/v1/webhooks/my%20shop"))
        .send()
        .await?;
    let event = fake.last_event()?;
    assert_eq!(event["pathParameters"]["source"], "my shop");
    assert_eq!(event["rawPath"], "/v1/webhooks/my%20shop");

    // Greedy variables take the rest of the path, for any method on an ANY route.
    let response = http
        .delete(format!("{base}/files/a/b/c.txt"))
        .send()
        .await?;
    assert_eq!(response.text().await?, "files");
    let event = fake.last_event()?;
    assert_eq!(event["routeKey"], "ANY /files/{proxy+}");
    assert_eq!(event["pathParameters"], json!({ "proxy": "a/b/c.txt" }));
    assert_eq!(event["requestContext"]["http"]["method"], "DELETE");

    gateway.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn unknown_routes_and_wrong_methods_are_404_without_invoking() -> anyhow::Result<()> {
    let fake = Fake::echo();
    let (gateway, base) = start(webhook_routes(), &fake).await?;
    let http = client()?;

    for (method, path) in [
        (reqwest::Method::GET, "/nope"),
        (reqwest::Method::DELETE, "/v1/webhooks/facebook"),
        (reqwest::Method::GET, "/v1/events"),
        (reqwest::Method::POST, "/v1/events/"),
        (reqwest::Method::POST, "/v1/webhooks/a/b"),
        (reqwest::Method::GET, "/files"),
    ] {
        let response = http
            .request(method.clone(), format!("{base}{path}"))
            .send()
            .await?;
        assert_eq!(response.status(), 404, "{method} {path}");
        assert_eq!(header(&response, "content-type"), Some("application/json"));
        assert!(header(&response, "apigw-requestid").is_some());
        assert_eq!(
            response.json::<Value>().await?,
            json!({ "message": "Not Found" })
        );
    }
    assert!(fake.calls()?.is_empty());

    gateway.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn default_route_catches_the_rest() -> anyhow::Result<()> {
    let fake = Fake::echo();
    let mut routes = webhook_routes();
    routes.push(Route::new("ANY", "$default", "fallback"));
    let (gateway, base) = start(routes, &fake).await?;
    let http = client()?;

    let response = http
        .put(format!("{base}/anything/at/all?x=1"))
        .send()
        .await?;
    assert_eq!(response.text().await?, "fallback");
    let event = fake.last_event()?;
    assert_eq!(event["routeKey"], "$default");
    assert_eq!(event["rawPath"], "/anything/at/all");
    assert!(event.get("pathParameters").is_none());
    // Real routes still win.
    let response = http.post(format!("{base}/v1/events")).send().await?;
    assert_eq!(response.text().await?, "ingest");

    gateway.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn query_strings_headers_and_cookies() -> anyhow::Result<()> {
    let fake = Fake::echo();
    let (gateway, base) = start(webhook_routes(), &fake).await?;
    let http = client()?;

    let query = "hub.mode=subscribe&id=1&id=2&q=a%20b+c&flag&enc=%2Fx";
    http.get(format!("{base}/v1/webhooks/facebook?{query}"))
        .header("X-Custom-Header", "One")
        .header("x-multi", "a")
        .header("X-Multi", "b")
        .header("User-Agent", "gateway-test/1.0")
        .header("Cookie", "session=abc; theme=dark")
        .header("X-Forwarded-For", "203.0.113.9")
        .send()
        .await?;
    let event = fake.last_event()?;
    assert_eq!(event["rawQueryString"], query);
    assert_eq!(
        event["queryStringParameters"],
        json!({ "hub.mode": "subscribe", "id": "1,2", "q": "a b c", "flag": "", "enc": "/x" })
    );
    let headers = &event["headers"];
    assert_eq!(headers["x-custom-header"], "One");
    assert_eq!(headers["x-multi"], "a,b");
    assert_eq!(headers["user-agent"], "gateway-test/1.0");
    assert!(
        headers.get("cookie").is_none(),
        "cookies move out of the headers"
    );
    assert!(headers
        .as_object()
        .context("headers")?
        .keys()
        .all(|k| k == &k.to_ascii_lowercase()));
    assert_eq!(headers["x-forwarded-for"], "203.0.113.9, 127.0.0.1");
    assert_eq!(headers["x-forwarded-proto"], "http");
    assert!(headers["x-amzn-trace-id"]
        .as_str()
        .is_some_and(|t| t.starts_with("Root=1-")));
    assert_eq!(event["cookies"], json!(["session=abc", "theme=dark"]));
    assert_eq!(
        event["requestContext"]["http"]["userAgent"],
        "gateway-test/1.0"
    );
    assert_eq!(event["requestContext"]["http"]["sourceIp"], "127.0.0.1");

    // No query, no cookies: the fields are omitted; rawQueryString is an empty string.
    http.get(format!("{base}/v1/webhooks/facebook"))
        .send()
        .await?;
    let event = fake.last_event()?;
    assert_eq!(event["rawQueryString"], "");
    assert!(event.get("queryStringParameters").is_none());
    assert!(event.get("cookies").is_none());

    gateway.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn text_bodies_are_strings_and_the_rest_base64() -> anyhow::Result<()> {
    let fake = Fake::echo();
    let (gateway, base) = start(webhook_routes(), &fake).await?;
    let http = client()?;
    let url = format!("{base}/v1/events");
    let b64 = base64::engine::general_purpose::STANDARD;

    let json_text = r#"{"type":"PAGE_VIEW","note":"héllo"}"#;
    for content_type in [
        "application/json",
        "application/json; charset=utf-8",
        "application/problem+json",
        "application/x-ndjson",
        "text/csv",
        "application/x-www-form-urlencoded",
        "application/xml",
    ] {
        http.post(&url)
            .header("content-type", content_type)
            .body(json_text)
            .send()
            .await?;
        let event = fake.last_event()?;
        assert_eq!(event["body"], json_text, "{content_type}");
        assert_eq!(event["isBase64Encoded"], false, "{content_type}");
    }

    // gzip-encoded JSON: base64, whatever the content type.
    let gzipped: Vec<u8> = vec![
        0x1f, 0x8b, 0x08, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x03, 0xff,
    ];
    http.post(&url)
        .header("content-type", "application/json")
        .header("content-encoding", "gzip")
        .body(gzipped.clone())
        .send()
        .await?;
    let event = fake.last_event()?;
    assert_eq!(event["isBase64Encoded"], true);
    assert_eq!(
        b64.decode(event["body"].as_str().context("body")?)?,
        gzipped
    );
    assert_eq!(event["headers"]["content-encoding"], "gzip");

    // Binary content type, no content type, and "text" that is not UTF-8.
    let binary = vec![0u8, 159, 146, 150, 255];
    for content_type in [Some("application/octet-stream"), None, Some("text/plain")] {
        let mut request = http.post(&url).body(binary.clone());
        if let Some(content_type) = content_type {
            request = request.header("content-type", content_type);
        }
        request.send().await?;
        let event = fake.last_event()?;
        assert_eq!(event["isBase64Encoded"], true, "{content_type:?}");
        assert_eq!(b64.decode(event["body"].as_str().context("body")?)?, binary);
    }
    // Plain UTF-8 without a content type is still base64.
    http.post(&url).body("plain").send().await?;
    assert_eq!(fake.last_event()?["isBase64Encoded"], true);

    // Empty body: no body field at all.
    http.post(&url)
        .header("content-type", "application/json")
        .send()
        .await?;
    let event = fake.last_event()?;
    assert!(event.get("body").is_none());
    assert_eq!(event["isBase64Encoded"], false);

    gateway.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn structured_responses_are_mapped() -> anyhow::Result<()> {
    let bytes = vec![0u8, 1, 2, 254, 255];
    let encoded = base64::engine::general_purpose::STANDARD.encode(&bytes);
    let fake = Fake::new(move |_, _| {
        Ok(json!({
            "statusCode": 201,
            "headers": { "Content-Type": "application/octet-stream", "x-one": "1", "x-multi": "dropped" },
            "multiValueHeaders": { "x-multi": ["a", "b"] },
            "cookies": ["session=abc; Path=/; HttpOnly", "theme=dark"],
            "body": encoded,
            "isBase64Encoded": true,
        }))
    });
    let (gateway, base) = start(webhook_routes(), &fake).await?;

    let response = client()?.post(format!("{base}/v1/events")).send().await?;
    assert_eq!(response.status(), 201);
    assert_eq!(
        header(&response, "content-type"),
        Some("application/octet-stream")
    );
    assert_eq!(header(&response, "x-one"), Some("1"));
    let multi: Vec<&str> = response
        .headers()
        .get_all("x-multi")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    assert_eq!(multi, ["a", "b"]);
    let cookies: Vec<&str> = response
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    assert_eq!(cookies, ["session=abc; Path=/; HttpOnly", "theme=dark"]);
    let request_id = header(&response, "apigw-requestid")
        .context("apigw-requestid")?
        .to_owned();
    assert_eq!(
        fake.last_event()?["requestContext"]["requestId"],
        request_id.as_str()
    );
    assert_eq!(response.bytes().await?.as_ref(), bytes.as_slice());

    gateway.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn text_and_empty_structured_responses() -> anyhow::Result<()> {
    let fake = Fake::new(|function, _| {
        Ok(match function {
            "facebook-verify" => json!({
                "statusCode": 200,
                "headers": { "content-type": "text/plain" },
                "body": "1158201444",
                "isBase64Encoded": false,
            }),
            _ => json!({ "statusCode": 204 }),
        })
    });
    let (gateway, base) = start(webhook_routes(), &fake).await?;
    let http = client()?;

    let response = http
        .get(format!("{base}/v1/webhooks/facebook"))
        .send()
        .await?;
    assert_eq!(response.status(), 200);
    assert_eq!(header(&response, "content-type"), Some("text/plain"));
    assert_eq!(response.text().await?, "1158201444");

    let response = http.post(format!("{base}/v1/events")).send().await?;
    assert_eq!(response.status(), 204);
    assert!(response.bytes().await?.is_empty());

    gateway.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn answers_without_status_code_are_inferred_200_json() -> anyhow::Result<()> {
    let fake = Fake::new(|function, _| {
        Ok(match function {
            "ingest" => json!({ "eventId": "e-1", "status": "queued" }),
            _ => json!("just a string"),
        })
    });
    let (gateway, base) = start(webhook_routes(), &fake).await?;
    let http = client()?;

    let response = http.post(format!("{base}/v1/events")).send().await?;
    assert_eq!(response.status(), 200);
    assert_eq!(header(&response, "content-type"), Some("application/json"));
    assert_eq!(
        response.json::<Value>().await?,
        json!({ "eventId": "e-1", "status": "queued" })
    );

    let response = http.post(format!("{base}/v1/webhooks/shop")).send().await?;
    assert_eq!(response.status(), 200);
    assert_eq!(response.text().await?, r#""just a string""#);

    gateway.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn invocation_errors_become_500_and_503() -> anyhow::Result<()> {
    let fake = Fake::new(|_, event| {
        let source = event["pathParameters"]["source"]
            .as_str()
            .unwrap_or_default();
        match source {
            "timeout" => Err(InvokeError::Timeout { seconds: 30 }),
            "error" => Err(InvokeError::FunctionError {
                error_type: "Boom".into(),
                error_message: "it broke".into(),
            }),
            "crash" => Err(InvokeError::Crashed("exit status 101".into())),
            "unknown" => Err(InvokeError::UnknownFunction("generic".into())),
            "malformed" => Ok(json!({ "statusCode": "teapot" })),
            "badbase64" => Ok(json!({ "statusCode": 200, "body": "@@@", "isBase64Encoded": true })),
            _ => Ok(json!({ "statusCode": 200 })),
        }
    });
    let (gateway, base) = start(webhook_routes(), &fake).await?;
    let http = client()?;

    for (source, status, message) in [
        ("timeout", 503, "Service Unavailable"),
        ("error", 500, "Internal Server Error"),
        ("crash", 500, "Internal Server Error"),
        ("unknown", 500, "Internal Server Error"),
        ("malformed", 500, "Internal Server Error"),
        ("badbase64", 500, "Internal Server Error"),
    ] {
        let response = http
            .post(format!("{base}/v1/webhooks/{source}"))
            .send()
            .await?;
        assert_eq!(response.status(), status, "{source}");
        assert!(header(&response, "apigw-requestid").is_some());
        assert_eq!(
            response.json::<Value>().await?,
            json!({ "message": message }),
            "{source}"
        );
    }

    gateway.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn integration_timeout_is_503() -> anyhow::Result<()> {
    let fake = Fake::slow(Duration::from_secs(3), |_, _| {
        Ok(json!({ "statusCode": 200 }))
    });
    let config = GatewayConfig {
        integration_timeout: Duration::from_millis(200),
        ..Default::default()
    };
    let (gateway, base) = start_with(webhook_routes(), &fake, config).await?;

    let response = client()?.post(format!("{base}/v1/events")).send().await?;
    assert_eq!(response.status(), 503);
    assert_eq!(
        response.json::<Value>().await?,
        json!({ "message": "Service Unavailable" })
    );

    gateway.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn bodies_over_10_mib_are_413() -> anyhow::Result<()> {
    let fake = Fake::new(|_, event| {
        let length = event["body"].as_str().map_or(0, str::len);
        Ok(json!({ "statusCode": 200, "body": length.to_string() }))
    });
    let (gateway, base) = start(webhook_routes(), &fake).await?;
    let http = client()?;
    let url = format!("{base}/v1/events");

    let response = http
        .post(&url)
        .header("content-type", "text/plain")
        .body(vec![b'a'; MAX_BODY_BYTES])
        .send()
        .await?;
    assert_eq!(response.status(), 200);
    assert_eq!(response.text().await?, MAX_BODY_BYTES.to_string());

    let response = http
        .post(&url)
        .header("content-type", "text/plain")
        .body(vec![b'a'; MAX_BODY_BYTES + 1])
        .send()
        .await?;
    assert_eq!(response.status(), 413);
    assert!(header(&response, "apigw-requestid").is_some());
    assert_eq!(
        response.json::<Value>().await?,
        json!({ "message": "Request Entity Too Large" })
    );
    assert_eq!(
        fake.calls()?.len(),
        1,
        "the oversized request is not invoked"
    );

    gateway.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn shutdown_finishes_in_flight_requests_and_releases_the_port() -> anyhow::Result<()> {
    let fake = Fake::slow(Duration::from_millis(500), |_, _| {
        Ok(json!({ "statusCode": 200, "body": "done" }))
    });
    let (gateway, base) = start(webhook_routes(), &fake).await?;
    let addr = gateway.local_addr();
    let http = client()?;

    // An idle keep-alive connection (pooled by this client) must not hold the shutdown up.
    let idle = client()?;
    let response = idle
        .get(format!("{base}/v1/webhooks/facebook"))
        .send()
        .await?;
    assert_eq!(response.text().await?, "done");
    fake.calls.lock().map_err(|_| anyhow!("poisoned"))?.clear();
    let in_flight = tokio::spawn({
        let http = http.clone();
        let url = format!("{base}/v1/events");
        async move { http.post(url).send().await }
    });
    // Wait until the request reached the function.
    for _ in 0..100 {
        if !fake.calls()?.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    ensure!(
        !fake.calls()?.is_empty(),
        "the request never reached the function"
    );

    tokio::time::timeout(Duration::from_secs(10), gateway.shutdown())
        .await
        .context("shutdown hung")?;
    let response = in_flight.await??;
    assert_eq!(response.status(), 200);
    assert_eq!(response.text().await?, "done");

    // Nothing listens any more, and the port can be bound again.
    let fresh = reqwest::Client::new();
    assert!(fresh
        .post(format!("{base}/v1/events"))
        .send()
        .await
        .is_err());
    let again = Gateway::bind(addr, webhook_routes(), fake.clone()).await?;
    assert_eq!(again.local_addr(), addr);
    let response = fresh.post(format!("{base}/v1/webhooks/x")).send().await?;
    assert_eq!(response.status(), 200);
    again.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn binding_a_port_in_use_fails_now() -> anyhow::Result<()> {
    let fake = Fake::echo();
    let (gateway, _) = start(webhook_routes(), &fake).await?;
    let taken = Gateway::bind(gateway.local_addr(), webhook_routes(), fake.clone()).await;
    assert!(taken.is_err());
    gateway.shutdown().await;
    Ok(())
}

/// The event deserializes into the types `lambda_http` uses, and has AWS's field types.
#[tokio::test]
async fn event_matches_payload_format_2_0() -> anyhow::Result<()> {
    use aws_lambda_events::apigw::ApiGatewayV2httpRequest;

    let fake = Fake::echo();
    let (gateway, base) = start(webhook_routes(), &fake).await?;
    let http = client()?;
    let host = gateway.local_addr().to_string();

    http.post(format!("{base}/v1/webhooks/shop?a=1&a=2&b=x"))
        .header("content-type", "application/json")
        .header("cookie", "c1=v1; c2=v2")
        .header("user-agent", "curl/8.5.0")
        .body(r#"{"hello":"world"}"#)
        .send()
        .await?;
    let (function, event) = fake.single()?;
    assert_eq!(function, "generic");

    // Field by field, with JSON types.
    let str_of = |v: &Value| v.as_str().map(str::to_owned);
    assert_eq!(event["version"], "2.0");
    assert_eq!(event["routeKey"], "POST /v1/webhooks/{source}");
    assert_eq!(event["rawPath"], "/v1/webhooks/shop");
    assert_eq!(event["rawQueryString"], "a=1&a=2&b=x");
    assert_eq!(event["cookies"], json!(["c1=v1", "c2=v2"]));
    let headers = event["headers"]
        .as_object()
        .context("headers is an object")?;
    assert!(headers.values().all(Value::is_string));
    assert_eq!(
        headers.get("host").and_then(str_of).as_deref(),
        Some(host.as_str())
    );
    assert_eq!(
        headers.get("content-type").and_then(str_of).as_deref(),
        Some("application/json")
    );
    assert_eq!(
        event["queryStringParameters"],
        json!({ "a": "1,2", "b": "x" })
    );
    assert_eq!(event["pathParameters"], json!({ "source": "shop" }));
    assert_eq!(event["body"], r#"{"hello":"world"}"#);
    assert_eq!(event["isBase64Encoded"], false);
    assert!(event.get("stageVariables").is_none());

    let context = &event["requestContext"];
    assert_eq!(context["accountId"], "123456789012");
    assert_eq!(context["apiId"], "local");
    assert_eq!(context["domainName"], host.as_str());
    assert_eq!(context["domainPrefix"], "127.0.0.1");
    assert_eq!(context["http"]["method"], "POST");
    assert_eq!(context["http"]["path"], "/v1/webhooks/shop");
    assert_eq!(context["http"]["protocol"], "HTTP/1.1");
    assert_eq!(context["http"]["sourceIp"], "127.0.0.1");
    assert_eq!(context["http"]["userAgent"], "curl/8.5.0");
    assert_eq!(context["routeKey"], "POST /v1/webhooks/{source}");
    assert_eq!(context["stage"], "$default");
    let request_id = context["requestId"]
        .as_str()
        .context("requestId is a string")?;
    assert_eq!(request_id.len(), 16);
    let time = context["time"].as_str().context("time is a string")?;
    let parsed = chrono::DateTime::parse_from_str(time, "%d/%b/%Y:%H:%M:%S %z")
        .with_context(|| format!("time {time:?}"))?;
    let epoch = context["timeEpoch"]
        .as_i64()
        .context("timeEpoch is an integer")?;
    assert_eq!(parsed.timestamp(), epoch / 1000);
    let age = chrono::Utc::now().timestamp_millis() - epoch;
    assert!(
        (0..60_000).contains(&age),
        "timeEpoch is in milliseconds and recent"
    );

    // What lambda_http deserializes.
    let request: ApiGatewayV2httpRequest = serde_json::from_value(event.clone())?;
    assert_eq!(request.version.as_deref(), Some("2.0"));
    assert_eq!(
        request.route_key.as_deref(),
        Some("POST /v1/webhooks/{source}")
    );
    assert_eq!(request.raw_path.as_deref(), Some("/v1/webhooks/shop"));
    assert_eq!(request.raw_query_string.as_deref(), Some("a=1&a=2&b=x"));
    assert_eq!(
        request.cookies,
        Some(vec!["c1=v1".to_owned(), "c2=v2".to_owned()])
    );
    assert_eq!(
        request
            .headers
            .get("content-type")
            .and_then(|v| v.to_str().ok()),
        Some("application/json")
    );
    assert_eq!(
        request.query_string_parameters.all("a"),
        Some(vec!["1", "2"])
    );
    assert_eq!(request.query_string_parameters.first("b"), Some("x"));
    assert_eq!(
        request.path_parameters.get("source").map(String::as_str),
        Some("shop")
    );
    assert_eq!(request.body.as_deref(), Some(r#"{"hello":"world"}"#));
    assert!(!request.is_base64_encoded);
    let context = &request.request_context;
    assert_eq!(context.http.method.as_str(), "POST");
    assert_eq!(context.http.source_ip.as_deref(), Some("127.0.0.1"));
    assert_eq!(context.stage.as_deref(), Some("$default"));
    assert_eq!(context.request_id.as_deref(), Some(request_id));
    assert_eq!(context.time_epoch, epoch);

    // Request ids are unique.
    http.post(format!("{base}/v1/webhooks/shop")).send().await?;
    let ids: Vec<String> = fake
        .calls()?
        .iter()
        .filter_map(|(_, e)| e["requestContext"]["requestId"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(ids.len(), 2);
    assert_ne!(ids[0], ids[1]);

    gateway.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn throttled_routes_answer_429_with_retry_after_without_invoking() -> anyhow::Result<()> {
    use tally_local::throttle::{Throttle, Throttling};
    let fake = Fake::new(|_, _| Ok(json!({ "statusCode": 202, "body": "{}" })));
    let config = GatewayConfig {
        throttling: Throttling {
            default: Some(Throttle {
                rate: 100.0,
                burst: 100,
            }),
            routes: [(
                "POST /v1/events".to_owned(),
                Throttle {
                    rate: 1.0,
                    burst: 2,
                },
            )]
            .into(),
        },
        ..Default::default()
    };
    let (gateway, base) = start_with(webhook_routes(), &fake, config).await?;
    let http = client()?;
    let mut statuses = Vec::new();
    let mut throttled = None;
    for _ in 0..3 {
        let response = http
            .post(format!("{base}/v1/events"))
            .body("{}")
            .send()
            .await?;
        statuses.push(response.status().as_u16());
        if response.status() == 429 {
            let retry_after = response
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            throttled = Some((retry_after, response.json::<Value>().await?));
        }
    }
    assert_eq!(statuses, vec![202, 202, 429]);
    let (retry_after, body) = throttled.context("a throttled answer")?;
    assert_eq!(retry_after.as_deref(), Some("1"));
    assert_eq!(body["error"]["code"], "TOO_MANY_REQUESTS");
    assert!(
        body["requestId"].is_string() && body["error"]["details"].is_array(),
        "{body}"
    );
    assert_eq!(
        fake.calls()?.len(),
        2,
        "the throttled request never reached the function"
    );
    // Another route has its own bucket (the default).
    let other = http
        .post(format!("{base}/v1/webhooks/shop"))
        .body("{}")
        .send()
        .await?;
    assert_eq!(other.status(), 202);
    // A second later the route has a token again.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let again = http
        .post(format!("{base}/v1/events"))
        .body("{}")
        .send()
        .await?;
    assert_eq!(again.status(), 202);
    gateway.shutdown().await;
    Ok(())
}
