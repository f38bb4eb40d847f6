//! `rollup`: the events stream's consumer (tumbling windows → idempotent aggregate parts; each
//! batch's leads scored as it arrives) and the scheduled tasks: reconciliation of settled days
//! and recomputes.

use std::sync::Arc;

use lambda_runtime::{run, service_fn, Error, LambdaEvent};
use tally::aggregation::{RollupHandler, RollupInvocation};
use tally::aws::{sdk_config, DynamoAggregates, DynamoEventStore, DynamoLeads, DynamoRules};
use tally::config::{process_env, RollupConfig};
use tally::observability::init_logging;
use tracing::Instrument;

#[tokio::main]
async fn main() -> Result<(), Error> {
    init_logging();
    let config = RollupConfig::load(&process_env())?;
    let aws = sdk_config().await;
    let table = config.analytics_table.clone();
    let handler = &RollupHandler::new(
        Arc::new(DynamoAggregates::new(&aws, table.clone())),
        Arc::new(DynamoLeads::new(&aws, table.clone())),
        Arc::new(DynamoEventStore::new(&aws, config.events_table.clone())),
        DynamoRules::new(&aws, table),
        config.settle,
    )
    .with_recompute_budget(config.recompute_budget);
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
