//! `repair`: re-derives what failed stream batches should have produced (aggregates, scores,
//! archive lines) from the events table, then deletes their references from the failure queues.
//! Invoked by ops (`aws lambda invoke --payload '{"maxRecords": 10}'`), never by an event source.

use lambda_runtime::{run, service_fn, Error, LambdaEvent};
use serde_json::Value;
use tally::aws::{repair_ports, sdk_config};
use tally::config::{process_env, RepairConfig};
use tally::observability::init_logging;
use tally::repair::{RepairReport, Repairer};
use tracing::Instrument;

#[tokio::main]
async fn main() -> Result<(), Error> {
    init_logging();
    let config = RepairConfig::load(&process_env())?;
    let aws = sdk_config().await;
    let repairer = &Repairer::new(
        repair_ports(&aws, &aws, &config),
        config.limits.max_event_age_days,
    );
    run(service_fn(move |event: LambdaEvent<Value>| async move {
        let span = tracing::info_span!("invocation", request_id = %event.context.request_id);
        let report: RepairReport = repairer
            .invoke(event.payload, chrono::Utc::now())
            .instrument(span)
            .await?;
        Ok::<RepairReport, Error>(report)
    }))
    .await
}
