//! Integration-test harness for Tally.
//!
//! * [`emulators()`] installs (when missing, into the git-ignored `<repo>/.local/`) and starts
//!   DynamoDB Local and moto once per test process, on free loopback ports; they die with the
//!   test process.
//! * [`Stack::provision`] creates the DynamoDB tables and SQS queues declared in
//!   `<repo>/template.yaml` under a unique name prefix, so tests run in parallel without sharing
//!   resources; [`Stack::provision_from`] takes another template (e.g. a fixture).
//! * [`sdk_config`] builds an SDK config for an emulator endpoint (us-east-1, static dummy
//!   credentials). Build clients per test: SDK clients must not be shared across tokio runtimes,
//!   and every `#[tokio::test]` has its own.
//!
//! ```no_run
//! # async fn example() -> anyhow::Result<()> {
//! let stack = tally_tests::Stack::provision("my_test").await?;
//! let table = stack.table("EventsTable")?;
//! let work = stack.queue("WorkQueue")?;
//! # let _ = (table, work);
//! # Ok(())
//! # }
//! ```

pub mod driver;
pub mod pipeline;
pub mod stream;

use std::path::PathBuf;

pub use tally_local::emulators::{DYNAMODB_ENDPOINT_ENV, MOTO_ENDPOINT_ENV, TIMEOUT_ENV};
pub use tally_local::install::LOCAL_DIR_ENV;
pub use tally_local::{
    emulators, local_dir, repo_root, sdk_config, template, Emulators, QueueInfo, Stack, REGION,
};

/// `<repo>/tests/fixtures/<name>`.
pub fn fixture(name: &str) -> PathBuf {
    repo_root().join("tests").join("fixtures").join(name)
}

/// Every line of every object in `bucket` (the archive as Firehose wrote it), in listing order.
pub async fn archived_lines(stack: &Stack, bucket: &str) -> anyhow::Result<Vec<String>> {
    use anyhow::Context;
    let mut lines = Vec::new();
    let mut token = None;
    loop {
        let page = stack
            .s3
            .list_objects_v2()
            .bucket(bucket)
            .set_continuation_token(token)
            .send()
            .await?;
        for object in page.contents() {
            let key = object.key().context("object key")?;
            let body = stack
                .s3
                .get_object()
                .bucket(bucket)
                .key(key)
                .send()
                .await?
                .body
                .collect()
                .await?
                .into_bytes();
            let text = String::from_utf8(body.to_vec())?;
            lines.extend(text.lines().map(str::to_owned));
        }
        token = page.next_continuation_token().map(str::to_owned);
        if token.is_none() {
            return Ok(lines);
        }
    }
}
