//! `ingest`: the HTTP routes that accept events (API Gateway HTTP API, payload 2.0).

use lambda_http::{run, service_fn, Error, Request};
use std::sync::Arc;

use tally::aws::{sdk_config, secrets_cache, DynamoCounters, DynamoLatencies, SqsEventQueue};
use tally::config::{process_env, secrets_arn, IngestConfig};
use tally::http::lambda::{from_lambda, to_lambda};
use tally::ingest::Ingest;
use tally::observability::init_logging;
use tally::request_latency::{LatencyBuffer, FLUSH_EVERY};

#[tokio::main]
async fn main() -> Result<(), Error> {
    init_logging();
    let env = process_env();
    let config = IngestConfig::load(&env)?;
    let secrets_arn = secrets_arn(&env)?;
    let aws = sdk_config().await;
    let queue = SqsEventQueue::new(&aws, config.work_queue_url.clone());
    let counters = DynamoCounters::new(&aws, config.analytics_table.clone());
    let latencies = DynamoLatencies::new(&aws, config.analytics_table.clone());
    let mut ingest = Ingest::new(config, queue, counters)
        .with_latencies(LatencyBuffer::new(Arc::new(latencies), FLUSH_EVERY));
    if let Some(secrets) = secrets_cache(&aws, secrets_arn) {
        ingest = ingest.with_secrets(secrets);
    }
    let ingest = &ingest;
    run(service_fn(move |request: Request| async move {
        to_lambda(ingest.handle(from_lambda(request)).await)
    }))
    .await
}
