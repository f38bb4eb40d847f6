//! Tally's local stack: DynamoDB Local and moto on loopback, the template's resources created from
//! `template.yaml`, the function binaries under a Lambda Runtime API emulator, the HTTP API, the
//! event-source mappings and the schedules. The test harness (`tests/`) uses the same emulator and
//! provisioning code.

pub mod cors;
pub mod cost;
pub mod emulators;
pub mod events;
pub mod functions;
pub mod gateway;
pub mod install;
pub mod invoke;
pub mod meter;
pub mod publish;
pub mod queue_state;
pub mod runtime;
pub mod secrets;
pub mod seed;
pub mod sources;
pub mod stack;
pub mod template;
pub mod throttle;
pub mod up;
pub mod websocket;

pub use emulators::{emulators, EmulatorOptions, Emulators};
pub use install::{local_dir, repo_root};
pub use stack::{QueueInfo, Stack};

/// One region everywhere: moto keeps state per region.
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
            "tally-local",
        )))
        .build()
}
