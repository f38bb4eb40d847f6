//! Fault injection for end-to-end tests of the real binaries (cargo feature `faults`, which no
//! deployed build enables): make chosen events fail to store, or crash a function once.

use std::collections::HashSet;

use async_trait::async_trait;

use crate::store::{
    EventStore, FailureRecord, ProcessedRecord, StoreError, StoreOutcome, StoredEvent,
};

/// Comma-separated `eventId` prefixes whose `store_processed` fails as if DynamoDB throttled.
pub const FAIL_EVENT_PREFIXES_ENV: &str = "TALLY_FAULT_FAIL_EVENT_PREFIXES";
/// A file path: when it does not exist, the next invocation creates it and exits the process.
pub const EXIT_ONCE_ENV: &str = "TALLY_FAULT_EXIT_ONCE";
/// A file path: while the file exists, every `store_processed` fails as if DynamoDB were down
/// (an outage a bench can start and end from outside the function).
pub const OUTAGE_FILE_ENV: &str = "TALLY_FAULT_OUTAGE_FILE";

pub struct FaultyStore<S> {
    inner: S,
    failing_prefixes: Vec<String>,
    failing_ids: HashSet<String>,
    outage_file: Option<std::path::PathBuf>,
}

impl<S> FaultyStore<S> {
    pub fn new(inner: S, failing_prefixes: Vec<String>) -> Self {
        Self {
            inner,
            failing_prefixes,
            failing_ids: HashSet::new(),
            outage_file: None,
        }
    }

    pub fn failing_ids(inner: S, ids: &[&str]) -> Self {
        Self {
            inner,
            failing_prefixes: Vec::new(),
            failing_ids: ids.iter().map(|s| s.to_string()).collect(),
            outage_file: None,
        }
    }

    pub fn from_env(inner: S) -> Self {
        let prefixes = std::env::var(FAIL_EVENT_PREFIXES_ENV)
            .unwrap_or_default()
            .split(',')
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .map(str::to_owned)
            .collect();
        let mut store = Self::new(inner, prefixes);
        store.outage_file = std::env::var_os(OUTAGE_FILE_ENV)
            .filter(|p| !p.is_empty())
            .map(Into::into);
        store
    }

    fn fails(&self, event_id: &str) -> bool {
        self.outage_file.as_ref().is_some_and(|f| f.exists())
            || self.failing_ids.contains(event_id)
            || self
                .failing_prefixes
                .iter()
                .any(|p| event_id.starts_with(p))
    }
}

#[async_trait]
impl<S: EventStore> EventStore for FaultyStore<S> {
    async fn store_processed(&self, record: &ProcessedRecord) -> Result<StoreOutcome, StoreError> {
        if self.fails(&record.event.event_id) {
            return Err(StoreError::Unavailable(
                "ProvisionedThroughputExceededException (injected)".into(),
            ));
        }
        self.inner.store_processed(record).await
    }

    async fn record_failure(&self, record: &FailureRecord) -> Result<(), StoreError> {
        self.inner.record_failure(record).await
    }

    async fn record_replay(
        &self,
        event_id: &str,
        at: chrono::DateTime<chrono::Utc>,
        correlation_id: &str,
    ) -> Result<(), StoreError> {
        self.inner.record_replay(event_id, at, correlation_id).await
    }

    async fn get(&self, event_id: &str) -> Result<Option<StoredEvent>, StoreError> {
        self.inner.get(event_id).await
    }
}

/// Exits the process (mid-invocation) the first time it is called with `TALLY_FAULT_EXIT_ONCE`
/// naming a file that does not exist yet.
pub fn exit_once_if_requested() {
    let Ok(path) = std::env::var(EXIT_ONCE_ENV) else {
        return;
    };
    if !path.is_empty()
        && !std::path::Path::new(&path).exists()
        && std::fs::write(&path, b"crashed").is_ok()
    {
        tracing::error!("fault injection: exiting mid-invocation");
        std::process::exit(70);
    }
}
