//! Adapters: the only code that sees AWS SDK types. Each converts SDK results into the ports'
//! domain types and checks every partial-failure field the API returns.

mod analytics;
mod batch;
mod cost;
mod dynamo;
mod failed;
mod firehose;
mod item;
mod jobs;
mod latencies;
mod lead_failures;
mod leads;
mod live;
mod ops;
mod redrive;
mod repair;
mod rules;
mod secrets;
mod sqs;
mod stages;

pub use analytics::DynamoAggregates;
pub use dynamo::{hour_shard, DynamoCounters, DynamoEventStore, HOUR_SHARDS};
pub use firehose::FirehoseArchive;
pub use latencies::DynamoLatencies;
pub use leads::DynamoLeads;
pub use live::{DynamoConnections, ManagementApiSender};
pub use ops::{DynamoTableProbe, SqsQueueStats};
pub use redrive::SqsRedrive;
pub use repair::SqsFailureQueue;
pub use rules::DynamoRules;
pub use secrets::{secrets_cache, SecretsManagerStore};
pub use sqs::{SqsEventQueue, SqsVisibility};
pub use stages::{EventBridgeBus, EVENT_SOURCE};

use aws_config::{BehaviorVersion, SdkConfig};
use aws_sdk_dynamodb::error::{ProvideErrorMetadata, SdkError};

/// The query routes' ports on the tables and queues `config` names; `sqs` is the SDK config for
/// the queues (in AWS the same as `aws`; locally another emulator's).
pub fn query_ports(
    aws: &SdkConfig,
    sqs: &SdkConfig,
    config: &crate::config::QueryConfig,
) -> crate::query::QueryPorts {
    use std::sync::Arc;

    use crate::ops::{NamedDependency, NamedQueue};

    let analytics = &config.analytics_table;
    let work = Arc::new(SqsQueueStats::new(sqs, config.work_queue_url.clone()));
    let dead_letter = Arc::new(SqsQueueStats::new(
        sqs,
        config.dead_letter_queue_url.clone(),
    ));
    crate::query::QueryPorts {
        aggregates: Arc::new(DynamoAggregates::new(aws, analytics.clone())),
        rules: Arc::new(DynamoRules::new(aws, analytics.clone())),
        leads: Arc::new(DynamoLeads::new(aws, analytics.clone())),
        history: Arc::new(DynamoEventStore::new(aws, config.events_table.clone())),
        counters: Arc::new(DynamoCounters::new(aws, analytics.clone())),
        latencies: Arc::new(DynamoLatencies::new(aws, analytics.clone())),
        queues: vec![
            NamedQueue {
                label: "work",
                name: "work queue",
                stats: work.clone(),
            },
            NamedQueue {
                label: "dead_letter",
                name: "dead-letter queue",
                stats: dead_letter.clone(),
            },
        ],
        dependencies: vec![
            NamedDependency {
                name: "analytics table",
                dependency: Arc::new(DynamoTableProbe::new(aws, analytics.clone())),
            },
            NamedDependency {
                name: "events table",
                dependency: Arc::new(DynamoTableProbe::new(aws, config.events_table.clone())),
            },
            NamedDependency {
                name: "work queue",
                dependency: work,
            },
            NamedDependency {
                name: "dead-letter queue",
                dependency: dead_letter,
            },
        ],
    }
}

/// The admin routes' ports on the table and queues `config` names; `sqs` as for [`query_ports`].
pub fn admin_ports(
    aws: &SdkConfig,
    sqs: &SdkConfig,
    config: &crate::config::AdminConfig,
) -> crate::admin::AdminPorts {
    use std::sync::Arc;

    let events = Arc::new(DynamoEventStore::new(aws, config.events_table.clone()));
    let leads = Arc::new(DynamoLeads::new(aws, config.analytics_table.clone()));
    let scorer = crate::scoring::Scorer::new(
        leads.clone(),
        events.clone(),
        DynamoRules::new(aws, config.analytics_table.clone()),
    );
    crate::admin::AdminPorts {
        events: events.clone(),
        failed: events,
        work_queue: Arc::new(SqsEventQueue::new(sqs, config.work_queue_url.clone())),
        redrive: Arc::new(SqsRedrive::new(
            sqs,
            config.dead_letter_queue_url.clone(),
            config.work_queue_url.clone(),
        )),
        counters: Arc::new(DynamoCounters::new(aws, config.analytics_table.clone())),
        aggregates: Arc::new(DynamoAggregates::new(aws, config.analytics_table.clone())),
        work_queue_stats: Arc::new(SqsQueueStats::new(sqs, config.work_queue_url.clone())),
        dead_letter_stats: Arc::new(SqsQueueStats::new(
            sqs,
            config.dead_letter_queue_url.clone(),
        )),
        leads: Arc::new(scorer),
        lead_failures: leads,
    }
}

/// The repair's ports on the tables, the failure queues and the delivery stream; `messaging`
/// is the SDK config for the queues and Firehose (in AWS the same as `aws`; locally another
/// emulator's).
pub fn repair_ports(
    aws: &SdkConfig,
    messaging: &SdkConfig,
    config: &crate::config::RepairConfig,
) -> crate::repair::RepairPorts {
    use std::sync::Arc;

    let events = Arc::new(DynamoEventStore::new(aws, config.events_table.clone()));
    let scorer = crate::scoring::Scorer::new(
        Arc::new(DynamoLeads::new(aws, config.analytics_table.clone())),
        events.clone(),
        DynamoRules::new(aws, config.analytics_table.clone()),
    );
    crate::repair::RepairPorts {
        rollup_failures: Arc::new(SqsFailureQueue::new(
            messaging,
            config.rollup_failure_queue_url.clone(),
        )),
        archive_failures: Arc::new(SqsFailureQueue::new(
            messaging,
            config.archive_failure_queue_url.clone(),
        )),
        events: events.clone(),
        days: Arc::new(crate::aggregation::Reconciler::new(
            Arc::new(DynamoAggregates::new(aws, config.analytics_table.clone())),
            events,
            config.settle,
        )),
        leads: Arc::new(scorer),
        archive: Arc::new(FirehoseArchive::new(
            messaging,
            config.delivery_stream.clone(),
        )),
    }
}

/// Region, credentials and `AWS_ENDPOINT_URL` from the environment, as Lambda provides them.
pub async fn sdk_config() -> SdkConfig {
    aws_config::defaults(BehaviorVersion::latest()).load().await
}

/// An SDK failure as the store's error, described as [`describe`] does.
pub(crate) fn store_unavailable<E: ProvideErrorMetadata, R>(
    error: &SdkError<E, R>,
) -> crate::store::StoreError {
    crate::store::StoreError::Unavailable(describe(error))
}

/// A short, log-safe description of an SDK failure: the error code, never the whole request.
pub(crate) fn describe<E: ProvideErrorMetadata, R>(error: &SdkError<E, R>) -> String {
    match error {
        SdkError::ServiceError(e) => {
            let err = e.err();
            format!(
                "{}: {}",
                err.code().unwrap_or("ServiceError"),
                err.message().unwrap_or("no message")
            )
        }
        SdkError::TimeoutError(_) => "request timed out".into(),
        SdkError::DispatchFailure(_) => "connection failed".into(),
        SdkError::ResponseError(_) => "unreadable response".into(),
        SdkError::ConstructionFailure(_) => "request could not be built".into(),
        _ => "request failed".into(),
    }
}
