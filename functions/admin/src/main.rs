//! `admin`: the on-call routes of the HTTP API (scope `admin`): failed events, one event,
//! replay, redrive.

use lambda_http::{run, service_fn, Error, Request};
use std::sync::Arc;
use tally::admin::AdminApi;

use tally::aws::{admin_ports, sdk_config, secrets_cache, DynamoLatencies};
use tally::config::{process_env, secrets_arn, AdminConfig};
use tally::http::lambda::{from_lambda, to_lambda};
use tally::observability::init_logging;
use tally::request_latency::{LatencyBuffer, FLUSH_EVERY};

#[tokio::main]
async fn main() -> Result<(), Error> {
    init_logging();
    let env = process_env();
    let config = AdminConfig::load(&env)?;
    let secrets_arn = secrets_arn(&env)?;
    let aws = sdk_config().await;
    let ports = admin_ports(&aws, &aws, &config);
    let latencies = DynamoLatencies::new(&aws, config.analytics_table.clone());
    let mut api = AdminApi::new(config.api_keys, ports)
        .with_latencies(LatencyBuffer::new(Arc::new(latencies), FLUSH_EVERY));
    if let Some(secrets) = secrets_cache(&aws, secrets_arn) {
        api = api.with_secrets(secrets);
    }
    let api = &api;
    run(service_fn(move |request: Request| async move {
        to_lambda(api.handle(from_lambda(request)).await)
    }))
    .await
}
