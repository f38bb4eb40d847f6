//! `process`: the work queue's consumer (SQS event source with `ReportBatchItemFailures`).

use aws_lambda_events::sqs::{SqsBatchResponse, SqsEvent};
use lambda_runtime::{run, service_fn, Error, LambdaEvent};
use std::sync::Arc;

use tally::aws::{sdk_config, DynamoCounters, DynamoEventStore, SqsVisibility};
use tally::config::{process_env, ProcessConfig};
use tally::observability::init_logging;
use tally::process::{batch_response, inbound_messages, Processor};
use tracing::Instrument;

#[tokio::main]
async fn main() -> Result<(), Error> {
    init_logging();
    let config = ProcessConfig::load(&process_env())?;
    let aws = sdk_config().await;
    let store = DynamoEventStore::new(&aws, config.events_table.clone());
    #[cfg(feature = "faults")]
    let store = tally::faults::FaultyStore::from_env(store);
    let visibility = Arc::new(SqsVisibility::new(&aws, config.work_queue_url.clone()));
    let processor = &Processor::new(
        store,
        DynamoCounters::new(&aws, config.analytics_table.clone()),
        config.limits,
        config.max_receive_count,
    )
    .with_backoff(visibility, config.backoff)
    .with_counted_sources(config.counted_sources);
    run(service_fn(move |event: LambdaEvent<SqsEvent>| async move {
        let span = tracing::info_span!("invocation", request_id = %event.context.request_id);
        #[cfg(feature = "faults")]
        tally::faults::exit_once_if_requested();
        let messages = inbound_messages(event.payload)?;
        let failed = processor.process(messages).instrument(span).await;
        Ok::<SqsBatchResponse, Error>(batch_response(failed))
    }))
    .await
}
