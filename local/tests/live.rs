//! End-to-end: live updates through the local WebSocket API emulator and the real `live` binary.
//!
//! A console's handshake is refused without a read key and accepted with one (the `tally.v1`
//! subprotocol selected, the key never echoed); an event posted over HTTP reaches the open socket
//! as one message naming its lead; a connection the emulator no longer knows answers
//! `GoneException` through the real SDK and is forgotten; a closed socket is forgotten through
//! `$disconnect`.

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use base64::Engine as _;
use futures::StreamExt as _;
use serde_json::{json, Value};
use tally_local::up::{LocalStack, UpOptions, LOCAL_INGEST_KEY, LOCAL_READ_KEY};
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::Message;

fn protocol_for(key: &str) -> String {
    let encoded = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(key);
    format!("tally.v1, key.{encoded}")
}

async fn open(
    url: &str,
    protocol: Option<&str>,
) -> Result<
    (
        tokio_tungstenite::WebSocketStream<
            tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
        >,
        Option<String>,
    ),
    tokio_tungstenite::tungstenite::Error,
> {
    let mut request = url.into_client_request()?;
    if let Some(p) = protocol {
        request.headers_mut().insert(
            "sec-websocket-protocol",
            HeaderValue::from_str(p)
                .map_err(|e| tokio_tungstenite::tungstenite::Error::HttpFormat(e.into()))?,
        );
    }
    let (socket, response) = tokio_tungstenite::connect_async(request).await?;
    let selected = response
        .headers()
        .get("sec-websocket-protocol")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    Ok((socket, selected))
}

async fn connection_ids(stack: &LocalStack) -> Result<Vec<String>> {
    let client =
        aws_sdk_dynamodb::Client::new(&tally_local::sdk_config(&stack.stack.dynamodb_endpoint));
    let output = client
        .scan()
        .table_name(stack.stack.table("ConnectionsTable")?)
        .send()
        .await?;
    let mut ids: Vec<String> = output
        .items()
        .iter()
        .filter_map(|item| item.get("connectionId")?.as_s().ok().cloned())
        .collect();
    ids.sort();
    Ok(ids)
}

async fn wait_until<F, Fut>(what: &str, check: F) -> Result<()>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<bool>>,
{
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if check().await? {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!("timed out waiting until {what}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_console_socket_receives_each_batch_and_closed_connections_are_forgotten() -> Result<()> {
    let stack = LocalStack::start(UpOptions::new(
        tally_local::repo_root().join("template.yaml"),
    ))
    .await?;
    let outcome = async {
        let live = stack.live.as_ref().context("the template declares a WebSocket API")?;
        let url = live.url.clone();

        // Refused: no subprotocol, an ingest key, an unknown key.
        for protocol in [None, Some(protocol_for(LOCAL_INGEST_KEY)), Some(protocol_for("nope"))] {
            match open(&url, protocol.as_deref()).await {
                Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
                    assert!(
                        [401, 403].contains(&response.status().as_u16()),
                        "{protocol:?}: {}",
                        response.status()
                    );
                }
                other => bail!("{protocol:?} was not refused: {:?}", other.map(|(_, p)| p)),
            }
        }
        assert!(connection_ids(&stack).await?.is_empty());

        let (mut socket, selected) = open(&url, Some(&protocol_for(LOCAL_READ_KEY))).await?;
        assert_eq!(selected.as_deref(), Some("tally.v1"), "only the protocol is selected");
        let open_ids = connection_ids(&stack).await?;
        assert_eq!(open_ids.len(), 1);

        // A connection that closed without telling anyone (as when a browser dies).
        let client = aws_sdk_dynamodb::Client::new(&tally_local::sdk_config(&stack.stack.dynamodb_endpoint));
        client
            .put_item()
            .table_name(stack.stack.table("ConnectionsTable")?)
            .item("connectionId", aws_sdk_dynamodb::types::AttributeValue::S("stale-connection".into()))
            .item("expiresAt", aws_sdk_dynamodb::types::AttributeValue::N((chrono::Utc::now().timestamp() + 3600).to_string()))
            .send()
            .await?;

        let posted = reqwest::Client::new()
            .post(format!("http://{}/v1/events", stack.api_addr))
            .bearer_auth(LOCAL_INGEST_KEY)
            .json(&json!({"type": "DEMO_REQUEST", "leadId": "live-lead", "lead": {"company": "Acme"}}))
            .send()
            .await?;
        assert_eq!(posted.status().as_u16(), 202);
        let message = tokio::time::timeout(Duration::from_secs(30), async {
            while let Some(frame) = socket.next().await {
                if let Message::Text(text) = frame? {
                    return Ok::<Value, anyhow::Error>(serde_json::from_str(&text)?);
                }
            }
            bail!("the socket closed")
        })
        .await
        .context("no message within 30 s")??;
        assert_eq!(message["type"], "leads");
        assert_eq!(message["leads"][0]["leadId"], "live-lead");
        assert_eq!(message["leads"][0]["score"], 50);
        assert_eq!(message["leads"][0]["company"], "Acme");

        // The stale connection answered GoneException and is forgotten; the open one is kept.
        wait_until("the gone connection is forgotten", || async {
            Ok(connection_ids(&stack).await? == open_ids)
        })
        .await?;

        // The management endpoint answers GoneException for unknown connections.
        let gone = reqwest::Client::new()
            .post(format!("{}/@connections/stale-connection", live.callback_url))
            .body("{}")
            .send()
            .await?;
        assert_eq!(gone.status().as_u16(), 410);
        assert_eq!(
            gone.headers().get("x-amzn-errortype").and_then(|v| v.to_str().ok()),
            Some("GoneException")
        );

        // Closing the socket runs $disconnect, which forgets it.
        socket.close(None).await?;
        wait_until("the closed connection is forgotten", || async {
            Ok(connection_ids(&stack).await?.is_empty())
        })
        .await?;
        Ok(())
    }
    .await;
    stack.stop().await;
    outcome
}
