//! Adapters: the only code that sees AWS SDK types. Each converts SDK results into the ports'
//! domain types and checks every partial-failure field the API returns.

mod analytics;
mod batch;
mod dynamo;
mod item;
mod leads;
mod rules;
mod sqs;

pub use analytics::DynamoAggregates;
pub use dynamo::{DynamoCounters, DynamoEventStore};
pub use leads::DynamoLeads;
pub use rules::DynamoRules;
pub use sqs::SqsEventQueue;

use aws_config::{BehaviorVersion, SdkConfig};
use aws_sdk_dynamodb::error::{ProvideErrorMetadata, SdkError};

/// Region, credentials and `AWS_ENDPOINT_URL` from the environment, as Lambda provides them.
pub async fn sdk_config() -> SdkConfig {
    aws_config::defaults(BehaviorVersion::latest()).load().await
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
