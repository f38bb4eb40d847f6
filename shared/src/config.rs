//! Typed configuration read once at cold start; a bad value fails init with the variable's name.

use std::str::FromStr;

use crate::auth::ApiKeys;
use crate::counters::CountedSources;
use crate::event::Limits;
use crate::retry::Backoff;
use crate::signature::WebhookSecrets;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("environment variable {0} is required")]
    Missing(&'static str),
    #[error("environment variable {name} is invalid: {reason}")]
    Invalid { name: &'static str, reason: String },
}

/// Reads variables through `lookup` so tests need not touch the process environment.
pub struct Env<F: Fn(&str) -> Option<String>>(pub F);

impl<F: Fn(&str) -> Option<String>> Env<F> {
    pub fn required(&self, name: &'static str) -> Result<String, ConfigError> {
        self.optional(name).ok_or(ConfigError::Missing(name))
    }

    pub fn optional(&self, name: &'static str) -> Option<String> {
        (self.0)(name).filter(|v| !v.trim().is_empty())
    }

    pub fn parsed<T: FromStr>(&self, name: &'static str, default: T) -> Result<T, ConfigError>
    where
        T::Err: std::fmt::Display,
    {
        match self.optional(name) {
            None => Ok(default),
            Some(v) => v.trim().parse().map_err(|e: T::Err| ConfigError::Invalid {
                name,
                reason: e.to_string(),
            }),
        }
    }

    /// `API_KEY_DIGESTS`: `<sha256 hex>:<scope>` pairs (none: every keyed route refuses).
    fn api_keys(&self) -> Result<ApiKeys, ConfigError> {
        ApiKeys::parse(&self.optional("API_KEY_DIGESTS").unwrap_or_default()).map_err(|reason| {
            ConfigError::Invalid {
                name: "API_KEY_DIGESTS",
                reason,
            }
        })
    }

    /// `COUNTED_SOURCES` (default `web`): sources counted by name besides the built-in ones.
    fn counted_sources(&self) -> Result<CountedSources, ConfigError> {
        match self.optional("COUNTED_SOURCES") {
            Some(spec) => CountedSources::parse(&spec).map_err(|e| ConfigError::Invalid {
                name: "COUNTED_SOURCES",
                reason: e,
            }),
            None => Ok(CountedSources::default()),
        }
    }

    fn limits(&self) -> Result<Limits, ConfigError> {
        Ok(Limits {
            max_event_age_days: self
                .parsed("MAX_EVENT_AGE_DAYS", Limits::default().max_event_age_days)?,
            ..Limits::default()
        })
    }
}

pub fn process_env() -> Env<impl Fn(&str) -> Option<String>> {
    Env(|name: &str| std::env::var(name).ok())
}

#[derive(Debug, Clone)]
pub struct FacebookConfig {
    pub app_secret: String,
    pub verify_token: String,
}

#[derive(Debug, Clone)]
pub struct IngestConfig {
    pub work_queue_url: String,
    pub analytics_table: String,
    pub api_keys: ApiKeys,
    pub facebook: Option<FacebookConfig>,
    pub tiktok_secret: Option<String>,
    pub webhook_secrets: WebhookSecrets,
    /// `COUNTED_SOURCES` (default `web`): sources counted by name besides the built-in ones.
    pub counted_sources: CountedSources,
    pub limits: Limits,
}

impl IngestConfig {
    pub fn load<F: Fn(&str) -> Option<String>>(env: &Env<F>) -> Result<Self, ConfigError> {
        let invalid = |name, reason: String| ConfigError::Invalid { name, reason };
        let facebook =
            match (
                env.optional("FACEBOOK_APP_SECRET"),
                env.optional("FACEBOOK_VERIFY_TOKEN"),
            ) {
                (Some(app_secret), Some(verify_token)) => Some(FacebookConfig {
                    app_secret,
                    verify_token,
                }),
                (None, None) => None,
                _ => return Err(invalid(
                    "FACEBOOK_VERIFY_TOKEN",
                    "FACEBOOK_APP_SECRET and FACEBOOK_VERIFY_TOKEN are set together or not at all"
                        .into(),
                )),
            };
        Ok(Self {
            work_queue_url: env.required("WORK_QUEUE_URL")?,
            analytics_table: env.required("ANALYTICS_TABLE")?,
            api_keys: env.api_keys()?,
            facebook,
            tiktok_secret: env.optional("TIKTOK_WEBHOOK_SECRET"),
            webhook_secrets: WebhookSecrets::parse(
                &env.optional("WEBHOOK_SECRETS").unwrap_or_default(),
            )
            .map_err(|e| invalid("WEBHOOK_SECRETS", e))?,
            counted_sources: env.counted_sources()?,
            limits: env.limits()?,
        })
    }
}

/// `SECRETS_ARN`: the Secrets Manager secret holding the keys and webhook secrets (see
/// `tally::secrets`). When it is set, the same values may not also come from plain environment
/// variables.
pub fn secrets_arn<F: Fn(&str) -> Option<String>>(
    env: &Env<F>,
) -> Result<Option<String>, ConfigError> {
    let arn = env.optional("SECRETS_ARN");
    if arn.is_some() {
        for name in [
            "API_KEY_DIGESTS",
            "FACEBOOK_APP_SECRET",
            "FACEBOOK_VERIFY_TOKEN",
            "TIKTOK_WEBHOOK_SECRET",
            "WEBHOOK_SECRETS",
        ] {
            if env.optional(name).is_some() {
                return Err(ConfigError::Invalid {
                    name,
                    reason: "must not be set with SECRETS_ARN (the secret holds it)".into(),
                });
            }
        }
    }
    Ok(arn)
}

#[derive(Debug, Clone)]
pub struct ProcessConfig {
    pub events_table: String,
    pub analytics_table: String,
    /// The queue whose failed messages get their retry delay (`WORK_QUEUE_URL`).
    pub work_queue_url: String,
    /// Must equal the work queue's `maxReceiveCount`: the attempt that reaches it records
    /// `DEAD_LETTER` before SQS moves the message.
    pub max_receive_count: u32,
    /// `RETRY_BASE_SECONDS` (default 2) and `RETRY_CAP_SECONDS` (default 60).
    pub backoff: Backoff,
    /// `COUNTED_SOURCES`, as ingest's: labels replayed events by source in the counters.
    pub counted_sources: CountedSources,
    pub limits: Limits,
}

impl ProcessConfig {
    pub fn load<F: Fn(&str) -> Option<String>>(env: &Env<F>) -> Result<Self, ConfigError> {
        let max_receive_count = env.parsed("MAX_RECEIVE_COUNT", 10u32)?;
        if max_receive_count == 0 {
            return Err(ConfigError::Invalid {
                name: "MAX_RECEIVE_COUNT",
                reason: "must be at least 1".into(),
            });
        }
        let defaults = Backoff::default();
        let base: u64 = env.parsed("RETRY_BASE_SECONDS", defaults.base.as_secs())?;
        let cap: u64 = env.parsed("RETRY_CAP_SECONDS", defaults.cap.as_secs())?;
        // SQS takes visibility timeouts up to 12 hours.
        if cap > 43_200 || base > cap {
            return Err(ConfigError::Invalid {
                name: "RETRY_CAP_SECONDS",
                reason: "must be at least RETRY_BASE_SECONDS and at most 43200".into(),
            });
        }
        Ok(Self {
            events_table: env.required("EVENTS_TABLE")?,
            analytics_table: env.required("ANALYTICS_TABLE")?,
            work_queue_url: env.required("WORK_QUEUE_URL")?,
            max_receive_count,
            backoff: Backoff {
                base: std::time::Duration::from_secs(base),
                cap: std::time::Duration::from_secs(cap),
            },
            counted_sources: env.counted_sources()?,
            limits: env.limits()?,
        })
    }
}

#[derive(Debug, Clone)]
pub struct RollupConfig {
    pub events_table: String,
    pub analytics_table: String,
    /// A day is reconciled once none of its events was processed for this long.
    pub settle: chrono::Duration,
    /// A recompute run starts no new leaderboard shard after this long (below the timeout).
    pub recompute_budget: std::time::Duration,
}

impl RollupConfig {
    pub fn load<F: Fn(&str) -> Option<String>>(env: &Env<F>) -> Result<Self, ConfigError> {
        let seconds: i64 = env.parsed("ROLLUP_SETTLE_SECONDS", 1200)?;
        if seconds < 60 {
            return Err(ConfigError::Invalid {
                name: "ROLLUP_SETTLE_SECONDS",
                reason: "must be at least 60".into(),
            });
        }
        let budget: u64 = env.parsed("RECOMPUTE_BUDGET_SECONDS", 60)?;
        if !(1..=840).contains(&budget) {
            return Err(ConfigError::Invalid {
                name: "RECOMPUTE_BUDGET_SECONDS",
                reason: "must be 1 to 840 (and well below the function's timeout)".into(),
            });
        }
        Ok(Self {
            events_table: env.required("EVENTS_TABLE")?,
            analytics_table: env.required("ANALYTICS_TABLE")?,
            settle: chrono::Duration::seconds(seconds),
            recompute_budget: std::time::Duration::from_secs(budget),
        })
    }
}

/// The `stages` function: where lead stage changes go.
#[derive(Debug, Clone)]
pub struct ConsoleConfig {
    /// The live-updates WebSocket URL (`LIVE_URL`, `wss://...`); without it the console polls.
    pub live_url: Option<String>,
}

impl ConsoleConfig {
    pub fn load<F: Fn(&str) -> Option<String>>(env: &Env<F>) -> Result<Self, ConfigError> {
        let live_url = env.optional("LIVE_URL");
        if let Some(url) = &live_url {
            if !(url.starts_with("wss://") || url.starts_with("ws://")) {
                return Err(ConfigError::Invalid {
                    name: "LIVE_URL",
                    reason: "must be a wss:// or ws:// URL".into(),
                });
            }
        }
        Ok(Self { live_url })
    }
}

pub struct LiveConfig {
    /// Open consoles (`CONNECTIONS_TABLE`).
    pub connections_table: String,
    /// The WebSocket stage's management endpoint (`LIVE_CALLBACK_URL`,
    /// `https://{api}.execute-api.{region}.amazonaws.com/{stage}`).
    pub callback_url: String,
    pub api_keys: ApiKeys,
}

impl LiveConfig {
    pub fn load<F: Fn(&str) -> Option<String>>(env: &Env<F>) -> Result<Self, ConfigError> {
        let callback_url = env.required("LIVE_CALLBACK_URL")?;
        if !(callback_url.starts_with("https://") || callback_url.starts_with("http://")) {
            return Err(ConfigError::Invalid {
                name: "LIVE_CALLBACK_URL",
                reason: "must be an https:// (or, locally, http://) URL".into(),
            });
        }
        Ok(Self {
            connections_table: env.required("CONNECTIONS_TABLE")?,
            callback_url,
            api_keys: env.api_keys()?,
        })
    }
}

pub struct StagesConfig {
    /// The EventBridge bus (`EVENT_BUS_NAME`).
    pub event_bus_name: String,
}

impl StagesConfig {
    pub fn load<F: Fn(&str) -> Option<String>>(env: &Env<F>) -> Result<Self, ConfigError> {
        Ok(Self {
            event_bus_name: env.required("EVENT_BUS_NAME")?,
        })
    }
}

#[derive(Debug, Clone)]
pub struct ArchiveConfig {
    /// The Firehose delivery stream the archive writes to.
    pub delivery_stream: String,
    /// `PutRecordBatch` calls at most for a line before its record is reported failed.
    pub max_attempts: u32,
}

impl ArchiveConfig {
    pub fn load<F: Fn(&str) -> Option<String>>(env: &Env<F>) -> Result<Self, ConfigError> {
        let max_attempts: u32 = env.parsed("ARCHIVE_MAX_ATTEMPTS", 4)?;
        if !(1..=10).contains(&max_attempts) {
            return Err(ConfigError::Invalid {
                name: "ARCHIVE_MAX_ATTEMPTS",
                reason: "must be 1 to 10".into(),
            });
        }
        Ok(Self {
            delivery_stream: env.required("DELIVERY_STREAM_NAME")?,
            max_attempts,
        })
    }
}

/// The repair function: both stream consumers' failure queues, and what re-derives their work.
#[derive(Debug, Clone)]
pub struct RepairConfig {
    pub events_table: String,
    pub analytics_table: String,
    pub rollup_failure_queue_url: String,
    pub archive_failure_queue_url: String,
    pub delivery_stream: String,
    /// As the rollup's (`ROLLUP_SETTLE_SECONDS`): a day is reconciled only once settled.
    pub settle: chrono::Duration,
    pub limits: Limits,
}

impl RepairConfig {
    pub fn load<F: Fn(&str) -> Option<String>>(env: &Env<F>) -> Result<Self, ConfigError> {
        let rollup = RollupConfig::load(env)?;
        Ok(Self {
            events_table: rollup.events_table,
            analytics_table: rollup.analytics_table,
            rollup_failure_queue_url: env.required("ROLLUP_FAILURE_QUEUE_URL")?,
            archive_failure_queue_url: env.required("ARCHIVE_FAILURE_QUEUE_URL")?,
            delivery_stream: env.required("DELIVERY_STREAM_NAME")?,
            settle: rollup.settle,
            limits: env.limits()?,
        })
    }
}

#[derive(Debug, Clone)]
pub struct RedriveConfig {
    pub dead_letter_queue_url: String,
    pub work_queue_url: String,
}

impl RedriveConfig {
    pub fn load<F: Fn(&str) -> Option<String>>(env: &Env<F>) -> Result<Self, ConfigError> {
        Ok(Self {
            dead_letter_queue_url: env.required("DEAD_LETTER_QUEUE_URL")?,
            work_queue_url: env.required("WORK_QUEUE_URL")?,
        })
    }
}

#[derive(Debug, Clone)]
pub struct AdminConfig {
    pub events_table: String,
    /// The pipeline counters and the hourly aggregates (`GET /v1/admin/metrics`).
    pub analytics_table: String,
    pub work_queue_url: String,
    pub dead_letter_queue_url: String,
    pub api_keys: ApiKeys,
}

impl AdminConfig {
    pub fn load<F: Fn(&str) -> Option<String>>(env: &Env<F>) -> Result<Self, ConfigError> {
        Ok(Self {
            events_table: env.required("EVENTS_TABLE")?,
            analytics_table: env.required("ANALYTICS_TABLE")?,
            work_queue_url: env.required("WORK_QUEUE_URL")?,
            dead_letter_queue_url: env.required("DEAD_LETTER_QUEUE_URL")?,
            api_keys: env.api_keys()?,
        })
    }
}

#[derive(Debug, Clone)]
pub struct QueryConfig {
    pub analytics_table: String,
    /// For a lead's events (its `byLead` index).
    pub events_table: String,
    /// Queues whose depth `/metrics` reports and `/health/ready` checks.
    pub work_queue_url: String,
    pub dead_letter_queue_url: String,
    pub api_keys: ApiKeys,
}

impl QueryConfig {
    pub fn load<F: Fn(&str) -> Option<String>>(env: &Env<F>) -> Result<Self, ConfigError> {
        Ok(Self {
            analytics_table: env.required("ANALYTICS_TABLE")?,
            events_table: env.required("EVENTS_TABLE")?,
            work_queue_url: env.required("WORK_QUEUE_URL")?,
            dead_letter_queue_url: env.required("DEAD_LETTER_QUEUE_URL")?,
            api_keys: env.api_keys()?,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Env<impl Fn(&str) -> Option<String>> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Env(move |k: &str| map.get(k).cloned())
    }

    #[test]
    fn process_config_reads_and_defaults() {
        let c = ProcessConfig::load(&env(&[
            ("EVENTS_TABLE", "e"),
            ("ANALYTICS_TABLE", "a"),
            ("WORK_QUEUE_URL", "q"),
        ]));
        let c = c.map_err(|e| e.to_string());
        assert_eq!(c.as_ref().map(|c| c.max_receive_count), Ok(10));
        assert_eq!(c.as_ref().map(|c| c.backoff), Ok(Backoff::default()));
        assert_eq!(c.map(|c| c.limits.max_event_age_days), Ok(30));
    }

    #[test]
    fn missing_and_invalid_values_name_the_variable() {
        let missing = ProcessConfig::load(&env(&[("ANALYTICS_TABLE", "a")]))
            .err()
            .map(|e| e.to_string());
        assert_eq!(
            missing.as_deref(),
            Some("environment variable EVENTS_TABLE is required")
        );
        let bad = ProcessConfig::load(&env(&[
            ("EVENTS_TABLE", "e"),
            ("ANALYTICS_TABLE", "a"),
            ("MAX_RECEIVE_COUNT", "x"),
        ]))
        .err()
        .map(|e| e.to_string());
        assert!(bad.is_some_and(|m| m.contains("MAX_RECEIVE_COUNT")));
        for (base, cap) in [("10", "5"), ("1", "50000"), ("x", "5")] {
            let bad = ProcessConfig::load(&env(&[
                ("EVENTS_TABLE", "e"),
                ("ANALYTICS_TABLE", "a"),
                ("WORK_QUEUE_URL", "q"),
                ("RETRY_BASE_SECONDS", base),
                ("RETRY_CAP_SECONDS", cap),
            ]))
            .err()
            .map(|e| e.to_string());
            assert!(bad.is_some_and(|m| m.contains("RETRY_")), "{base} {cap}");
        }
        for bad in [
            "Web",
            "a b",
            &vec!["s"; 51]
                .iter()
                .enumerate()
                .map(|(i, s)| format!("{s}{i}"))
                .collect::<Vec<_>>()
                .join(","),
        ] {
            let error = IngestConfig::load(&env(&[
                ("WORK_QUEUE_URL", "q"),
                ("ANALYTICS_TABLE", "a"),
                ("COUNTED_SOURCES", bad),
            ]))
            .err()
            .map(|e| e.to_string());
            assert!(
                error.is_some_and(|m| m.contains("COUNTED_SOURCES")),
                "{bad}"
            );
        }
        let half_facebook = IngestConfig::load(&env(&[
            ("WORK_QUEUE_URL", "q"),
            ("ANALYTICS_TABLE", "a"),
            ("FACEBOOK_APP_SECRET", "s"),
        ]));
        assert!(half_facebook.is_err());
    }

    #[test]
    fn archive_config_needs_the_stream_and_bounds_the_attempts() {
        let c = ArchiveConfig::load(&env(&[("DELIVERY_STREAM_NAME", "archive")]));
        let c = c.map_err(|e| e.to_string());
        assert_eq!(
            c.map(|c| (c.delivery_stream, c.max_attempts)),
            Ok(("archive".to_owned(), 4))
        );
        for bad in [
            vec![],
            vec![("DELIVERY_STREAM_NAME", "a"), ("ARCHIVE_MAX_ATTEMPTS", "0")],
        ] {
            assert!(ArchiveConfig::load(&env(&bad)).is_err(), "{bad:?}");
        }
    }
}
