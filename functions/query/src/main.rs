//! `query`: the read routes of the HTTP API (API Gateway HTTP API, payload 2.0).

use std::sync::Arc;

use lambda_http::{run, service_fn, Error, Request};
use tally::aws::{sdk_config, DynamoAggregates, DynamoEventStore, DynamoLeads, DynamoRules};
use tally::config::{process_env, QueryConfig};
use tally::http::lambda::{from_lambda, to_lambda};
use tally::observability::init_logging;
use tally::query::{QueryApi, QueryPorts};

#[tokio::main]
async fn main() -> Result<(), Error> {
    init_logging();
    let config = QueryConfig::load(&process_env())?;
    let aws = sdk_config().await;
    let analytics = &config.analytics_table;
    let ports = QueryPorts {
        aggregates: Arc::new(DynamoAggregates::new(&aws, analytics.clone())),
        rules: Arc::new(DynamoRules::new(&aws, analytics.clone())),
        leads: Arc::new(DynamoLeads::new(&aws, analytics.clone())),
        history: Arc::new(DynamoEventStore::new(&aws, config.events_table.clone())),
    };
    let api = &QueryApi::new(config.api_keys, ports);
    run(service_fn(move |request: Request| async move {
        to_lambda(api.handle(from_lambda(request)).await)
    }))
    .await
}
