//! `redrive`: moves dead-lettered messages back to the work queue. Invoked by ops
//! (`aws lambda invoke --payload '{"maxMessages": 100}'`), never by an event source.

use lambda_runtime::{run, service_fn, Error, LambdaEvent};
use serde_json::Value;
use tally::aws::{sdk_config, SqsRedrive};
use tally::config::{process_env, RedriveConfig};
use tally::observability::init_logging;
use tally::redrive::{RedriveReport, Redriver};
use tracing::Instrument;

#[tokio::main]
async fn main() -> Result<(), Error> {
    init_logging();
    let config = RedriveConfig::load(&process_env())?;
    let aws = sdk_config().await;
    let redriver = &Redriver::new(SqsRedrive::new(
        &aws,
        config.dead_letter_queue_url,
        config.work_queue_url,
    ));
    run(service_fn(move |event: LambdaEvent<Value>| async move {
        let span = tracing::info_span!("invocation", request_id = %event.context.request_id);
        let report: RedriveReport = redriver.invoke(event.payload).instrument(span).await?;
        Ok::<RedriveReport, Error>(report)
    }))
    .await
}
