//! `console`: the web console's page and assets (`GET /`, `GET /assets/{file}`), built from
//! `console/` by npm and embedded at compile time (see `build.rs`).

use lambda_http::{run, service_fn, Body, Error, Request, Response};
use tally::config::{process_env, ConsoleConfig};
use tally::console::{Asset, Console};
use tally::http::lambda::from_lambda;
use tally::observability::init_logging;

include!(concat!(env!("OUT_DIR"), "/assets.rs"));

#[tokio::main]
async fn main() -> Result<(), Error> {
    init_logging();
    let config = ConsoleConfig::load(&process_env())?;
    let console = Console::new(ASSETS, config.live_url.as_deref());
    let console = &console;
    run(service_fn(move |request: Request| async move {
        let answer = console.serve(&from_lambda(request));
        let mut response = Response::builder().status(answer.status);
        for (name, value) in answer.headers {
            response = response.header(name, value);
        }
        let body = if answer.binary {
            Body::Binary(answer.body)
        } else {
            Body::Text(String::from_utf8_lossy(&answer.body).into_owned())
        };
        Ok::<_, Error>(response.body(body)?)
    }))
    .await
}
