//! In-memory connections and sockets, for tests of the hub.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::{Connection, Connections, SendError, SocketSender};
use crate::store::StoreError;

#[derive(Default)]
pub struct MemoryConnections {
    connections: Mutex<BTreeMap<String, Connection>>,
    down: Mutex<bool>,
}

impl MemoryConnections {
    pub fn ids(&self) -> Vec<String> {
        self.connections
            .lock()
            .map(|c| c.keys().cloned().collect())
            .unwrap_or_default()
    }

    pub fn get(&self, id: &str) -> Option<Connection> {
        self.connections.lock().ok()?.get(id).cloned()
    }

    /// Every call fails while down.
    pub fn set_down(&self, down: bool) {
        if let Ok(mut d) = self.down.lock() {
            *d = down;
        }
    }

    fn check(&self) -> Result<(), StoreError> {
        match self.down.lock().map(|d| *d) {
            Ok(false) => Ok(()),
            _ => Err(StoreError::Unavailable("connections down".into())),
        }
    }
}

#[async_trait]
impl Connections for MemoryConnections {
    async fn add(&self, connection: &Connection) -> Result<(), StoreError> {
        self.check()?;
        let mut all = self
            .connections
            .lock()
            .map_err(|_| StoreError::Unavailable("poisoned".into()))?;
        all.insert(connection.id.clone(), connection.clone());
        Ok(())
    }

    async fn remove(&self, id: &str) -> Result<(), StoreError> {
        self.check()?;
        let mut all = self
            .connections
            .lock()
            .map_err(|_| StoreError::Unavailable("poisoned".into()))?;
        all.remove(id);
        Ok(())
    }

    async fn open(&self, limit: usize, now: DateTime<Utc>) -> Result<Vec<String>, StoreError> {
        self.check()?;
        let all = self
            .connections
            .lock()
            .map_err(|_| StoreError::Unavailable("poisoned".into()))?;
        Ok(all
            .values()
            .filter(|c| c.expires_at > now)
            .take(limit)
            .map(|c| c.id.clone())
            .collect())
    }
}

/// Sockets that record what each connection received; `gone` ones answer `Gone`, `failing`
/// ones another error.
#[derive(Default)]
pub struct MemorySockets {
    received: Mutex<BTreeMap<String, Vec<Vec<u8>>>>,
    pub gone: Mutex<BTreeSet<String>>,
    pub failing: Mutex<BTreeSet<String>>,
}

impl MemorySockets {
    pub fn received(&self, id: &str) -> Vec<Vec<u8>> {
        self.received
            .lock()
            .ok()
            .and_then(|r| r.get(id).cloned())
            .unwrap_or_default()
    }

    pub fn mark_gone(&self, id: &str) {
        if let Ok(mut gone) = self.gone.lock() {
            gone.insert(id.to_owned());
        }
    }

    pub fn mark_failing(&self, id: &str) {
        if let Ok(mut failing) = self.failing.lock() {
            failing.insert(id.to_owned());
        }
    }
}

#[async_trait]
impl SocketSender for MemorySockets {
    async fn send(&self, connection_id: &str, message: &[u8]) -> Result<(), SendError> {
        if self.gone.lock().is_ok_and(|g| g.contains(connection_id)) {
            return Err(SendError::Gone);
        }
        if self.failing.lock().is_ok_and(|f| f.contains(connection_id)) {
            return Err(SendError::Failed("injected".into()));
        }
        let mut received = self
            .received
            .lock()
            .map_err(|_| SendError::Failed("poisoned".into()))?;
        received
            .entry(connection_id.to_owned())
            .or_default()
            .push(message.to_vec());
        Ok(())
    }
}
