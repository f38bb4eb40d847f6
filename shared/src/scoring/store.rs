//! Where the scoring rules live: one item of the analytics table, written with the defaults on
//! first use (never hard-coded in the scoring path) and changed with optimistic concurrency.

use async_trait::async_trait;

use super::{Rule, ScoreRules};
use crate::store::StoreError;

/// The stored rules and the version a change must be based on.
#[derive(Debug, Clone, PartialEq)]
pub struct VersionedRules {
    pub rules: ScoreRules,
    pub version: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum RuleStoreError {
    /// Someone else changed the rules since `version` was read.
    #[error("rules changed concurrently")]
    Conflict,
    #[error(transparent)]
    Store(#[from] StoreError),
}

#[async_trait]
pub trait RuleStore: Send + Sync {
    /// The stored rules; `None` before first use.
    async fn load(&self) -> Result<Option<VersionedRules>, StoreError>;
    /// Writes `rules` as version `expected + 1` if the stored version is still `expected`
    /// (`0` = nothing stored yet).
    async fn save(
        &self,
        rules: &ScoreRules,
        expected: u64,
    ) -> Result<VersionedRules, RuleStoreError>;
}

/// The rules, writing the defaults when none are stored yet. Concurrent first uses agree: one
/// write wins and the others read it back.
pub async fn load_or_init<S: RuleStore + ?Sized>(store: &S) -> Result<VersionedRules, StoreError> {
    if let Some(current) = store.load().await? {
        return Ok(current);
    }
    match store.save(&ScoreRules::defaults(), 0).await {
        Ok(saved) => Ok(saved),
        Err(RuleStoreError::Conflict) => store.load().await?.ok_or_else(|| {
            StoreError::Unavailable("rules vanished after a concurrent first write".into())
        }),
        Err(RuleStoreError::Store(e)) => Err(e),
    }
}

/// Sets one rule (validated by the caller), retrying on concurrent changes.
pub async fn put_rule<S: RuleStore + ?Sized>(
    store: &S,
    rule: Rule,
) -> Result<VersionedRules, StoreError> {
    for _ in 0..8 {
        let mut current = load_or_init(store).await?;
        current.rules.set_rule(rule.clone());
        match store.save(&current.rules, current.version).await {
            Ok(saved) => return Ok(saved),
            Err(RuleStoreError::Conflict) => continue,
            Err(RuleStoreError::Store(e)) => return Err(e),
        }
    }
    Err(StoreError::Unavailable(
        "rules kept changing concurrently".into(),
    ))
}

/// Sets one rule if the stored set is still at `expected` (the version the caller read);
/// [`RuleStoreError::Conflict`] when anyone changed the rules or the settings since.
pub async fn put_rule_at<S: RuleStore + ?Sized>(
    store: &S,
    rule: Rule,
    expected: u64,
) -> Result<VersionedRules, RuleStoreError> {
    let mut current = load_or_init(store).await?;
    if current.version != expected {
        return Err(RuleStoreError::Conflict);
    }
    current.rules.set_rule(rule);
    store.save(&current.rules, expected).await
}

/// What `PUT /v1/scoring` changes: everything of the set but the rules.
#[derive(Debug, Clone, PartialEq)]
pub struct ScoringSettings {
    pub min: i64,
    pub max: i64,
    pub decay: super::Decay,
    pub stages: Vec<super::Stage>,
}

/// Replaces the settings if the stored set is still at `expected` (the version the caller read);
/// [`RuleStoreError::Conflict`] when anyone changed the rules or the settings since. The caller
/// validates the result ([`ScoreRules::validate`]) through `check`, before anything is written.
pub async fn put_settings<S: RuleStore + ?Sized, E>(
    store: &S,
    settings: ScoringSettings,
    expected: u64,
    check: impl FnOnce(&ScoreRules) -> Result<(), E>,
) -> Result<Result<VersionedRules, E>, RuleStoreError> {
    let current = load_or_init(store).await?;
    if current.version != expected {
        return Err(RuleStoreError::Conflict);
    }
    let mut rules = current.rules;
    rules.min = settings.min;
    rules.max = settings.max;
    rules.decay = settings.decay;
    rules.stages = settings.stages;
    if let Err(e) = check(&rules) {
        return Ok(Err(e));
    }
    store.save(&rules, expected).await.map(Ok)
}

#[async_trait]
impl<T: RuleStore + ?Sized> RuleStore for std::sync::Arc<T> {
    async fn load(&self) -> Result<Option<VersionedRules>, StoreError> {
        (**self).load().await
    }

    async fn save(
        &self,
        rules: &ScoreRules,
        expected: u64,
    ) -> Result<VersionedRules, RuleStoreError> {
        (**self).save(rules, expected).await
    }
}
