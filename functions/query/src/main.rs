//! `query`: the read routes of the HTTP API (API Gateway HTTP API, payload 2.0).

use lambda_http::{run, service_fn, Error, Request};
use std::sync::Arc;

use tally::aws::{query_ports, sdk_config, secrets_cache, DynamoLatencies};
use tally::config::{process_env, secrets_arn, QueryConfig};
use tally::http::lambda::{from_lambda, to_lambda};
use tally::observability::init_logging;
use tally::query::QueryApi;
use tally::request_latency::{LatencyBuffer, FLUSH_EVERY};

#[tokio::main]
async fn main() -> Result<(), Error> {
    init_logging();
    let env = process_env();
    let config = QueryConfig::load(&env)?;
    let secrets_arn = secrets_arn(&env)?;
    let aws = sdk_config().await;
    let ports = query_ports(&aws, &aws, &config);
    let latencies = DynamoLatencies::new(&aws, config.analytics_table.clone());
    let mut api = QueryApi::new(config.api_keys, ports)
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
