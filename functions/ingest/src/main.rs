//! `ingest`: the HTTP routes that accept events (API Gateway HTTP API, payload 2.0).

use lambda_http::{run, service_fn, Error, Request};
use tally::aws::{sdk_config, DynamoCounters, SqsEventQueue};
use tally::config::{process_env, IngestConfig};
use tally::http::lambda::{from_lambda, to_lambda};
use tally::ingest::Ingest;
use tally::observability::init_logging;

#[tokio::main]
async fn main() -> Result<(), Error> {
    init_logging();
    let config = IngestConfig::load(&process_env())?;
    let aws = sdk_config().await;
    let queue = SqsEventQueue::new(&aws, config.work_queue_url.clone());
    let counters = DynamoCounters::new(&aws, config.analytics_table.clone());
    let ingest = &Ingest::new(config, queue, counters);
    run(service_fn(move |request: Request| async move {
        to_lambda(ingest.handle(from_lambda(request)).await)
    }))
    .await
}
