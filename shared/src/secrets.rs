//! Keys and webhook secrets, kept out of plain Lambda environment variables: in AWS they are one
//! Secrets Manager secret, read on the first request that needs them (so a cold start pays
//! nothing for them) and kept for [`SECRETS_TTL`], so a rotated value is picked up within
//! minutes without a redeploy. Locally and in tests they can be given inline instead.
//!
//! The secret's string is JSON: `{"apiKeyDigests", "facebookAppSecret", "facebookVerifyToken",
//! "tiktokWebhookSecret", "webhookSecrets"}`, each in the form of its environment variable
//! (README, Configuration); empty or absent values are unset.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde::Deserialize;
use tracing::warn;

use crate::auth::ApiKeys;
use crate::config::FacebookConfig;
use crate::error::ApiError;
use crate::signature::WebhookSecrets;
use crate::store::StoreError;

/// How long fetched secrets are used before they are read again.
pub const SECRETS_TTL: Duration = Duration::from_secs(300);

/// What the HTTP functions authenticate with.
#[derive(Debug, Clone, Default)]
pub struct Secrets {
    pub api_keys: ApiKeys,
    pub facebook: Option<FacebookConfig>,
    pub tiktok_secret: Option<String>,
    pub webhook_secrets: WebhookSecrets,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct SecretJson {
    #[serde(default)]
    api_key_digests: String,
    #[serde(default)]
    facebook_app_secret: String,
    #[serde(default)]
    facebook_verify_token: String,
    #[serde(default)]
    tiktok_webhook_secret: String,
    #[serde(default)]
    webhook_secrets: String,
}

impl Secrets {
    /// Parses the secret's JSON; the error names the field, never a value.
    pub fn parse(json: &str) -> Result<Self, String> {
        let raw: SecretJson = serde_json::from_str(json).map_err(|e| {
            // The category only: serde's message could quote part of a value.
            let problem = match e.classify() {
                serde_json::error::Category::Data => "unknown or mistyped field",
                _ => "not JSON",
            };
            format!("the secret is not the expected JSON object ({problem})")
        })?;
        let set = |v: String| Some(v).filter(|v| !v.trim().is_empty());
        let facebook = match (set(raw.facebook_app_secret), set(raw.facebook_verify_token)) {
            (Some(app_secret), Some(verify_token)) => Some(FacebookConfig {
                app_secret,
                verify_token,
            }),
            (None, None) => None,
            _ => {
                return Err(
                    "facebookAppSecret and facebookVerifyToken are set together or not at all"
                        .into(),
                )
            }
        };
        Ok(Self {
            api_keys: ApiKeys::parse(&raw.api_key_digests)
                .map_err(|e| format!("apiKeyDigests: {e}"))?,
            facebook,
            tiktok_secret: set(raw.tiktok_webhook_secret),
            webhook_secrets: WebhookSecrets::parse(&raw.webhook_secrets)
                .map_err(|e| format!("webhookSecrets: {e}"))?,
        })
    }
}

/// Where the secret's string is kept (Secrets Manager in AWS).
#[async_trait]
pub trait SecretStore: Send + Sync {
    async fn secret_string(&self) -> Result<String, StoreError>;
}

enum Source {
    Inline(Arc<Secrets>),
    Store {
        store: Arc<dyn SecretStore>,
        ttl: Duration,
        cache: tokio::sync::Mutex<Option<(tokio::time::Instant, Arc<Secrets>)>>,
    },
}

/// The secrets a function authenticates with, inline or read through and cached.
pub struct SecretsCache(Source);

impl SecretsCache {
    pub fn inline(secrets: Secrets) -> Self {
        Self(Source::Inline(Arc::new(secrets)))
    }

    pub fn from_store(store: Arc<dyn SecretStore>, ttl: Duration) -> Self {
        Self(Source::Store {
            store,
            ttl,
            cache: tokio::sync::Mutex::new(None),
        })
    }

    /// The current secrets. A store that does not answer (or a secret that does not parse) is a
    /// `503` naming `secrets`; values fetched before keep serving past their time to live then,
    /// so a Secrets Manager hiccup does not lock clients out.
    pub async fn get(&self) -> Result<Arc<Secrets>, ApiError> {
        let (store, ttl, cache) = match &self.0 {
            Source::Inline(secrets) => return Ok(secrets.clone()),
            Source::Store { store, ttl, cache } => (store, ttl, cache),
        };
        let mut cached = cache.lock().await;
        if let Some((at, secrets)) = cached.as_ref() {
            if at.elapsed() < *ttl {
                return Ok(secrets.clone());
            }
        }
        let fetched = store
            .secret_string()
            .await
            .map_err(|e| e.to_string())
            .and_then(|json| Secrets::parse(&json));
        match fetched {
            Ok(secrets) => {
                let secrets = Arc::new(secrets);
                *cached = Some((tokio::time::Instant::now(), secrets.clone()));
                Ok(secrets)
            }
            Err(reason) => {
                warn!(%reason, "secrets could not be read");
                match cached.as_ref() {
                    Some((_, stale)) => Ok(stale.clone()),
                    None => Err(ApiError::unavailable("secrets")),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Mutex;

    use super::*;
    use crate::auth::Scope;

    struct Store {
        value: Mutex<Result<String, String>>,
        reads: AtomicUsize,
    }

    #[async_trait]
    impl SecretStore for Store {
        async fn secret_string(&self) -> Result<String, StoreError> {
            self.reads.fetch_add(1, Ordering::SeqCst);
            self.value
                .lock()
                .map_err(|_| StoreError::Unavailable("lock".into()))?
                .clone()
                .map_err(StoreError::Unavailable)
        }
    }

    fn secret(key: &str) -> String {
        serde_json::json!({
            "apiKeyDigests": format!("{}:ingest", ApiKeys::digest(key)),
            "facebookAppSecret": "fb", "facebookVerifyToken": "tok",
            "tiktokWebhookSecret": "", "webhookSecrets": "shop=s1,shop=s2"
        })
        .to_string()
    }

    #[test]
    fn the_secret_parses_and_names_what_is_wrong() {
        let s = Secrets::parse(&secret("k1")).unwrap_or_default();
        assert!(s
            .api_keys
            .authorize(Some("Bearer k1"), Scope::Ingest)
            .is_ok());
        assert!(s.facebook.is_some() && s.tiktok_secret.is_none());
        assert_eq!(
            s.webhook_secrets.for_source("shop").map(<[String]>::len),
            Some(2)
        );
        for (bad, names) in [
            ("nope", "not JSON"),
            (r#"{"apiKeys": "x"}"#, "unknown"),
            (r#"{"facebookAppSecret": "only"}"#, "together"),
            (r#"{"apiKeyDigests": "zz:ingest"}"#, "apiKeyDigests"),
        ] {
            let error = Secrets::parse(bad).err().unwrap_or_default();
            assert!(error.contains(names), "{bad}: {error}");
            assert!(!error.contains("only"), "no value is echoed: {error}");
        }
    }

    #[tokio::test]
    async fn read_once_kept_for_the_ttl_then_read_again_and_stale_on_failure() {
        let store = Arc::new(Store {
            value: Mutex::new(Ok(secret("k1"))),
            reads: AtomicUsize::new(0),
        });
        let cache = SecretsCache::from_store(store.clone(), Duration::from_millis(100));
        for _ in 0..10 {
            let s = cache.get().await.map_err(|e| e.to_string());
            assert!(s.is_ok_and(|s| s
                .api_keys
                .authorize(Some("Bearer k1"), Scope::Ingest)
                .is_ok()));
        }
        assert_eq!(store.reads.load(Ordering::SeqCst), 1);

        // Rotated: seen once the time to live has passed.
        if let Ok(mut v) = store.value.lock() {
            *v = Ok(secret("k2"));
        }
        tokio::time::sleep(Duration::from_millis(120)).await;
        let s = cache.get().await.map_err(|e| e.to_string());
        assert!(s.is_ok_and(|s| s
            .api_keys
            .authorize(Some("Bearer k2"), Scope::Ingest)
            .is_ok()));

        // The store fails: the last values keep serving.
        if let Ok(mut v) = store.value.lock() {
            *v = Err("throttled".into());
        }
        tokio::time::sleep(Duration::from_millis(120)).await;
        let s = cache.get().await.map_err(|e| e.to_string());
        assert!(s.is_ok_and(|s| s
            .api_keys
            .authorize(Some("Bearer k2"), Scope::Ingest)
            .is_ok()));
    }

    #[tokio::test]
    async fn no_secret_yet_is_a_503_naming_secrets() {
        let store = Arc::new(Store {
            value: Mutex::new(Err("AccessDenied".into())),
            reads: AtomicUsize::new(0),
        });
        let cache = SecretsCache::from_store(store, SECRETS_TTL);
        let error = cache.get().await.err();
        assert_eq!(error.as_ref().map(ApiError::status), Some(503));
        assert_eq!(
            error.map(|e| e.to_string()).as_deref(),
            Some("secrets is unavailable")
        );
    }
}
