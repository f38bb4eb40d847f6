//! `query`: the read routes of the HTTP API (API Gateway HTTP API, payload 2.0).

use lambda_http::{run, service_fn, Error, Request};
use tally::aws::{query_ports, sdk_config};
use tally::config::{process_env, QueryConfig};
use tally::http::lambda::{from_lambda, to_lambda};
use tally::observability::init_logging;
use tally::query::QueryApi;

#[tokio::main]
async fn main() -> Result<(), Error> {
    init_logging();
    let config = QueryConfig::load(&process_env())?;
    let aws = sdk_config().await;
    let ports = query_ports(&aws, &aws, &config);
    let api = &QueryApi::new(config.api_keys, ports);
    run(service_fn(move |request: Request| async move {
        to_lambda(api.handle(from_lambda(request)).await)
    }))
    .await
}
