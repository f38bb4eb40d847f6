//! `archive`: the events stream's second consumer, sending every stored event to the archive's
//! Firehose delivery stream (S3, NDJSON), with `ReportBatchItemFailures` for what it refuses.

use std::time::Duration;

use lambda_runtime::{run, service_fn, Error, LambdaEvent};
use tally::archive::{Archiver, BatchResponse, StreamBatch};
use tally::aws::{sdk_config, FirehoseArchive};
use tally::config::{process_env, ArchiveConfig};
use tally::observability::init_logging;
use tracing::Instrument;

/// The wait before the first resend; it doubles for each later one.
const BACKOFF: Duration = Duration::from_millis(200);

#[tokio::main]
async fn main() -> Result<(), Error> {
    init_logging();
    let config = ArchiveConfig::load(&process_env())?;
    let aws = sdk_config().await;
    let archiver = &Archiver::new(
        FirehoseArchive::new(&aws, config.delivery_stream),
        config.max_attempts,
        BACKOFF,
    );
    run(service_fn(
        move |event: LambdaEvent<StreamBatch>| async move {
            let span = tracing::info_span!("invocation", request_id = %event.context.request_id);
            Ok::<BatchResponse, Error>(archiver.handle(&event.payload).instrument(span).await)
        },
    ))
    .await
}
