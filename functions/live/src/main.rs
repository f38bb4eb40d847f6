//! `live`: the WebSocket API's routes (`$connect` with a read key, `$disconnect`, `$default`) and
//! the analytics table's stream, pushed to every open console as one message per batch.

use std::sync::Arc;

use lambda_runtime::{run, service_fn, Error, LambdaEvent};
use serde_json::Value;
use tally::aws::{sdk_config, secrets_cache, DynamoConnections, ManagementApiSender};
use tally::config::{process_env, secrets_arn, LiveConfig};
use tally::live::LiveHub;
use tally::observability::init_logging;
use tally::secrets::{Secrets, SecretsCache};
use tracing::Instrument;

#[tokio::main]
async fn main() -> Result<(), Error> {
    init_logging();
    let env = process_env();
    let config = LiveConfig::load(&env)?;
    let secrets_arn = secrets_arn(&env)?;
    let aws = sdk_config().await;
    let keys = secrets_cache(&aws, secrets_arn).unwrap_or_else(|| {
        SecretsCache::inline(Secrets {
            api_keys: config.api_keys.clone(),
            ..Secrets::default()
        })
    });
    let hub = LiveHub::new(
        keys,
        Arc::new(DynamoConnections::new(&aws, config.connections_table)),
        Arc::new(ManagementApiSender::new(&aws, &config.callback_url)),
    );
    let hub = &hub;
    run(service_fn(move |event: LambdaEvent<Value>| async move {
        let span = tracing::info_span!("invocation", request_id = %event.context.request_id);
        Ok::<_, Error>(
            hub.handle(event.payload, chrono::Utc::now())
                .instrument(span)
                .await,
        )
    }))
    .await
}
