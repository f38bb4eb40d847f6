//! `stages`: the analytics table's stream consumer, sending every lead stage change recorded on a
//! lead write to the stack's EventBridge bus, with `ReportBatchItemFailures` for what it refuses.

use lambda_runtime::{run, service_fn, Error, LambdaEvent};
use tally::aws::{sdk_config, EventBridgeBus};
use tally::config::{process_env, StagesConfig};
use tally::observability::{init_logging, Metrics};
use tally::scoring::{publish_stage_changes, StageStreamEvent};
use tracing::{info, Instrument};

#[tokio::main]
async fn main() -> Result<(), Error> {
    init_logging();
    let config = StagesConfig::load(&process_env())?;
    let aws = sdk_config().await;
    let bus = &EventBridgeBus::new(&aws, config.event_bus_name);
    run(service_fn(
        move |event: LambdaEvent<StageStreamEvent>| async move {
            let span = tracing::info_span!("invocation", request_id = %event.context.request_id);
            async move {
                let mut metrics = Metrics::new("stages");
                let result = publish_stage_changes(bus, &event.payload).await;
                if let Ok((_, outcome)) = &result {
                    metrics.count("StageChanges", outcome.changes as u64);
                    metrics.count("StageChangesPublished", outcome.published as u64);
                    metrics.count("StageChangesUnreadable", outcome.unreadable as u64);
                    if outcome.changes > 0 {
                        info!(
                            records = outcome.records,
                            changes = outcome.changes,
                            published = outcome.published,
                            "stage changes sent"
                        );
                    }
                }
                metrics.flush();
                result.map(|(response, _)| response).map_err(Error::from)
            }
            .instrument(span)
            .await
        },
    ))
    .await
}
