//! An in-memory [`LeadStore`] and [`LeadHistory`] for fast tests of the scoring domain and for
//! benchmarks that must not count I/O. Storage tests use the DynamoDB adapter.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use async_trait::async_trait;

use chrono::{DateTime, Utc};

use super::{
    board_shard, BoardEntry, BoardLead, LeadFailure, LeadFailures, LeadHistory, LeadReader,
    LeadRecord, LeadStore, LeadWrite, LeadWriteError, RecomputeJob, RecomputeJobs, ScoredEvent,
    StageChange, StagePublisher,
};
use crate::store::StoreError;

#[derive(Debug, Default)]
pub struct MemoryLeads {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    leads: HashMap<String, LeadRecord>,
    /// Versioned writes to fail with a conflict before succeeding.
    conflicts_to_inject: usize,
    job: Option<RecomputeJob>,
    /// Leads whose writes fail (as an item over DynamoDB's size limit would).
    unwritable: std::collections::HashSet<String>,
    failures: BTreeMap<String, LeadFailure>,
    /// The stage changes written, in order: what the table's stream would carry.
    stage_changes: Vec<StageChange>,
}

impl MemoryLeads {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Makes the next `n` lead writes fail as if someone else had written first.
    pub fn inject_conflicts(&self, n: usize) {
        self.lock().conflicts_to_inject = n;
    }

    /// Makes every write of `lead_id` fail until [`MemoryLeads::allow_writes`].
    pub fn refuse_writes(&self, lead_id: &str) {
        self.lock().unwritable.insert(lead_id.to_owned());
    }

    pub fn allow_writes(&self, lead_id: &str) {
        self.lock().unwritable.remove(lead_id);
    }

    pub fn lead(&self, lead_id: &str) -> Option<LeadRecord> {
        self.lock().leads.get(lead_id).cloned()
    }

    /// Every stage change written so far, in order (what the stream would publish).
    pub fn stage_changes(&self) -> Vec<StageChange> {
        self.lock().stage_changes.clone()
    }
}

#[async_trait]
impl LeadStore for MemoryLeads {
    async fn get_leads(
        &self,
        lead_ids: &[&str],
    ) -> Result<HashMap<String, LeadRecord>, StoreError> {
        let inner = self.lock();
        Ok(lead_ids
            .iter()
            .filter_map(|id| inner.leads.get(*id).map(|r| ((*id).to_owned(), r.clone())))
            .collect())
    }

    async fn write_lead(&self, write: LeadWrite<'_>, expected: u64) -> Result<(), LeadWriteError> {
        let mut inner = self.lock();
        let lead_id = write.lead_id;
        if inner.unwritable.contains(lead_id) {
            return Err(LeadWriteError::Store(StoreError::Unavailable(
                "ValidationException: Item size has exceeded the maximum allowed size (injected)"
                    .into(),
            )));
        }
        let stored = inner.leads.get(lead_id).map_or(0, |r| r.version);
        if inner.conflicts_to_inject > 0 {
            inner.conflicts_to_inject -= 1;
            // Someone else advanced the version (same content).
            if let Some(r) = inner.leads.get_mut(lead_id) {
                r.version += 1;
            }
            return Err(LeadWriteError::Conflict);
        }
        if stored != expected {
            return Err(LeadWriteError::Conflict);
        }
        inner.leads.insert(
            lead_id.to_owned(),
            LeadRecord {
                state: write.state.clone(),
                version: expected + 1,
                stage: write.stage.map(str::to_owned),
            },
        );
        if let Some(change) = write.change {
            inner.stage_changes.push(change.clone());
        }
        Ok(())
    }

    async fn shard_board(&self, shard: u32) -> Result<Vec<BoardLead>, StoreError> {
        let mut leads: Vec<BoardLead> = self
            .lock()
            .leads
            .iter()
            .filter(|(id, r)| r.state.events > 0 && board_shard(id) == shard)
            .map(|(id, r)| board_lead(id, r))
            .collect();
        leads.sort_by(|a, b| a.lead_id.cmp(&b.lead_id));
        Ok(leads)
    }
}

fn board_lead(lead_id: &str, record: &LeadRecord) -> BoardLead {
    BoardLead {
        lead_id: lead_id.to_owned(),
        entry: BoardEntry::of(&record.state),
        stage: record.stage.clone(),
        company: record.state.profile.company.clone(),
        events: record.state.events,
    }
}

/// An event bus in memory: keeps what it accepts; can refuse every other entry, or be down.
#[derive(Debug, Default)]
pub struct MemoryBus {
    inner: Mutex<BusState>,
}

#[derive(Debug, Default)]
struct BusState {
    published: Vec<StageChange>,
    refuse_every_other: bool,
    down: bool,
    calls: usize,
}

impl MemoryBus {
    pub fn published(&self) -> Vec<StageChange> {
        self.lock().published.clone()
    }
    /// Refuses every second entry of each call (as `FailedEntryCount` would report them).
    pub fn refuse_every_other(&self, on: bool) {
        self.lock().refuse_every_other = on;
    }
    pub fn set_down(&self, down: bool) {
        self.lock().down = down;
    }
    fn lock(&self) -> std::sync::MutexGuard<'_, BusState> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[async_trait]
impl StagePublisher for MemoryBus {
    async fn publish(&self, changes: &[StageChange]) -> Result<Vec<bool>, StoreError> {
        let mut bus = self.lock();
        if bus.down {
            return Err(StoreError::Unavailable("event bus down (injected)".into()));
        }
        bus.calls += 1;
        let refuse = bus.refuse_every_other;
        let mut accepted = Vec::with_capacity(changes.len());
        for (i, change) in changes.iter().enumerate() {
            let ok = !(refuse && i % 2 == 1);
            if ok {
                bus.published.push(change.clone());
            }
            accepted.push(ok);
        }
        Ok(accepted)
    }
}

#[async_trait]
impl LeadFailures for MemoryLeads {
    async fn record_failures(&self, failures: &[LeadFailure]) -> Result<(), StoreError> {
        let mut inner = self.lock();
        for f in failures {
            inner.failures.insert(f.lead_id.clone(), f.clone());
        }
        Ok(())
    }
    async fn failures(&self, limit: usize) -> Result<Vec<LeadFailure>, StoreError> {
        Ok(self.lock().failures.values().take(limit).cloned().collect())
    }
    async fn clear_failures(&self, lead_ids: &[String]) -> Result<(), StoreError> {
        let mut inner = self.lock();
        for id in lead_ids {
            inner.failures.remove(id);
        }
        Ok(())
    }
}

#[async_trait]
impl RecomputeJobs for MemoryLeads {
    async fn current_job(&self) -> Result<Option<RecomputeJob>, StoreError> {
        Ok(self.lock().job.clone())
    }

    async fn request_job(&self, job: &RecomputeJob) -> Result<(), StoreError> {
        self.lock().job = Some(job.clone());
        Ok(())
    }

    async fn advance_job(&self, job_id: &str, next_shard: u32) -> Result<bool, StoreError> {
        let mut inner = self.lock();
        match &mut inner.job {
            Some(job) if job.id == job_id && job.next_shard < next_shard => {
                job.next_shard = next_shard;
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    async fn finish_job(&self, job_id: &str) -> Result<(), StoreError> {
        let mut inner = self.lock();
        if inner.job.as_ref().is_some_and(|j| j.id == job_id) {
            inner.job = None;
        }
        Ok(())
    }
}

#[async_trait]
impl LeadReader for MemoryLeads {
    async fn leads(&self, lead_ids: &[&str]) -> Result<HashMap<String, LeadRecord>, StoreError> {
        self.get_leads(lead_ids).await
    }

    async fn board_leads(&self) -> Result<Vec<BoardLead>, StoreError> {
        Ok(self
            .lock()
            .leads
            .iter()
            .filter(|(_, r)| r.state.events > 0)
            .map(|(id, r)| board_lead(id, r))
            .collect())
    }

    async fn leads_by_email(&self, email: &str, limit: usize) -> Result<Vec<String>, StoreError> {
        let mut ids: Vec<String> = self
            .lock()
            .leads
            .iter()
            .filter(|(id, r)| super::indexed_email(id, &r.state.profile).as_deref() == Some(email))
            .map(|(id, _)| id.clone())
            .collect();
        ids.sort();
        ids.truncate(limit);
        Ok(ids)
    }
}

/// Every stored event, by lead: the events table's `byLead` index.
#[derive(Debug, Default)]
pub struct MemoryHistory {
    events: Mutex<HashMap<String, Vec<ScoredEvent>>>,
    /// Events handed out by reads, as an index read would bill them.
    read: std::sync::atomic::AtomicUsize,
}

impl MemoryHistory {
    fn events_of(&self, lead_id: &str) -> Vec<ScoredEvent> {
        self.events
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(lead_id)
            .cloned()
            .unwrap_or_default()
    }

    /// The lead's stored events, counted as read.
    fn read_all(&self, lead_id: &str) -> Vec<ScoredEvent> {
        let events = self.events_of(lead_id);
        self.read
            .fetch_add(events.len(), std::sync::atomic::Ordering::Relaxed);
        events
    }

    /// Events handed out by reads so far.
    pub fn events_read(&self) -> usize {
        self.read.load(std::sync::atomic::Ordering::Relaxed)
    }

    pub fn store(&self, lead_id: &str, event: ScoredEvent) {
        self.events
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(lead_id.to_owned())
            .or_default()
            .push(event);
    }
}

#[async_trait]
impl LeadHistory for MemoryHistory {
    async fn lead_events(&self, lead_id: &str) -> Result<Vec<ScoredEvent>, StoreError> {
        Ok(self.read_all(lead_id))
    }

    async fn latest_events(
        &self,
        lead_id: &str,
        after: Option<(DateTime<Utc>, &str)>,
        older: usize,
    ) -> Result<Vec<ScoredEvent>, StoreError> {
        let mut events = self.lead_events(lead_id).await?;
        events.sort_by(|a, b| b.sort_key().cmp(&a.sort_key()));
        let newer = events
            .iter()
            .take_while(|e| after.is_none_or(|a| e.sort_key() > a))
            .count();
        events.truncate(newer + older);
        Ok(events)
    }

    async fn events_after(
        &self,
        lead_id: &str,
        after: Option<(DateTime<Utc>, &str)>,
        limit: usize,
    ) -> Result<Vec<ScoredEvent>, StoreError> {
        // Counted as an index range read would bill it: only what comes back.
        let mut events = self.events_of(lead_id);
        events.sort_by(|a, b| a.sort_key().cmp(&b.sort_key()));
        events.retain(|e| after.is_none_or(|a| e.sort_key() > a));
        events.truncate(limit);
        self.read
            .fetch_add(events.len(), std::sync::atomic::Ordering::Relaxed);
        Ok(events)
    }
}

/// Rules kept in memory, versioned like the stored ones.
#[derive(Debug, Default)]
pub struct MemoryRules {
    current: Mutex<Option<super::VersionedRules>>,
}

#[async_trait]
impl super::RuleStore for MemoryRules {
    async fn load(&self) -> Result<Option<super::VersionedRules>, StoreError> {
        Ok(self
            .current
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone())
    }

    async fn save(
        &self,
        rules: &super::ScoreRules,
        expected: u64,
    ) -> Result<super::VersionedRules, super::RuleStoreError> {
        let mut current = self.current.lock().unwrap_or_else(|p| p.into_inner());
        if current.as_ref().map_or(0, |c| c.version) != expected {
            return Err(super::RuleStoreError::Conflict);
        }
        let saved = super::VersionedRules {
            rules: rules.clone(),
            version: expected + 1,
        };
        *current = Some(saved.clone());
        Ok(saved)
    }
}
