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
mod emulators;
mod install;
pub mod pipeline;
mod stack;
pub mod template;

use std::path::PathBuf;

pub use emulators::{emulators, Emulators, DYNAMODB_ENDPOINT_ENV, MOTO_ENDPOINT_ENV, TIMEOUT_ENV};
pub use install::{local_dir, repo_root, LOCAL_DIR_ENV};
pub use stack::{QueueInfo, Stack};

/// Region used everywhere in the tests.
pub const REGION: &str = "us-east-1";

/// An SDK config pointing at `endpoint` (e.g. `http://127.0.0.1:4566`), region us-east-1 and
/// static dummy credentials. Nothing is read from the environment or `~/.aws`.
pub fn sdk_config(endpoint: &str) -> aws_config::SdkConfig {
    use aws_sdk_dynamodb::config::{Credentials, SharedCredentialsProvider};
    aws_config::SdkConfig::builder()
        .behavior_version(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new(REGION))
        .endpoint_url(endpoint)
        .credentials_provider(SharedCredentialsProvider::new(Credentials::new(
            "test",
            "test",
            None,
            None,
            "tally-tests",
        )))
        .build()
}

/// `<repo>/tests/fixtures/<name>`.
pub fn fixture(name: &str) -> PathBuf {
    repo_root().join("tests").join("fixtures").join(name)
}
