//! `rollup`: the events stream's consumer (tumbling windows → idempotent aggregate parts) and
//! the scheduled reconciliation of settled days.

use std::sync::Arc;

use lambda_runtime::{run, service_fn, Error, LambdaEvent};
use tally::aggregation::{RollupHandler, RollupInvocation};
use tally::aws::{sdk_config, DynamoAggregates, DynamoEventStore};
use tally::config::{process_env, RollupConfig};
use tally::observability::init_logging;
use tracing::Instrument;

#[tokio::main]
async fn main() -> Result<(), Error> {
    init_logging();
    let config = RollupConfig::load(&process_env())?;
    let aws = sdk_config().await;
    let handler = &RollupHandler::new(
        Arc::new(DynamoAggregates::new(&aws, config.analytics_table.clone())),
        DynamoEventStore::new(&aws, config.events_table.clone()),
        config.settle,
    );
    // Typed payload: the runtime parses a (possibly multi-megabyte) window once.
    run(service_fn(
        move |event: LambdaEvent<RollupInvocation>| async move {
            let span = tracing::info_span!("invocation", request_id = %event.context.request_id);
            handler
                .handle_invocation(event.payload, chrono::Utc::now())
                .instrument(span)
                .await
                .map_err(Error::from)
        },
    ))
    .await
}
