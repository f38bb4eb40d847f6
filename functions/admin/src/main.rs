//! `admin`: the on-call routes of the HTTP API (scope `admin`): failed events, one event,
//! replay, redrive.

use lambda_http::{run, service_fn, Error, Request};
use tally::admin::AdminApi;
use tally::aws::{admin_ports, sdk_config};
use tally::config::{process_env, AdminConfig};
use tally::http::lambda::{from_lambda, to_lambda};
use tally::observability::init_logging;

#[tokio::main]
async fn main() -> Result<(), Error> {
    init_logging();
    let config = AdminConfig::load(&process_env())?;
    let aws = sdk_config().await;
    let ports = admin_ports(&aws, &aws, &config);
    let api = &AdminApi::new(config.api_keys, ports);
    run(service_fn(move |request: Request| async move {
        to_lambda(api.handle(from_lambda(request)).await)
    }))
    .await
}
