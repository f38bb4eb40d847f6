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
