//! The keys-and-secrets secret in Secrets Manager.

use async_trait::async_trait;

use crate::secrets::SecretStore;
use crate::store::StoreError;

pub struct SecretsManagerStore {
    client: aws_sdk_secretsmanager::Client,
    secret_id: String,
}

impl SecretsManagerStore {
    pub fn new(config: &aws_config::SdkConfig, secret_id: String) -> Self {
        Self {
            client: aws_sdk_secretsmanager::Client::new(config),
            secret_id,
        }
    }
}

#[async_trait]
impl SecretStore for SecretsManagerStore {
    async fn secret_string(&self) -> Result<String, StoreError> {
        let output = self
            .client
            .get_secret_value()
            .secret_id(&self.secret_id)
            .send()
            .await
            .map_err(|e| StoreError::Unavailable(super::describe(&e)))?;
        output
            .secret_string
            .ok_or_else(|| StoreError::Unavailable("the secret has no string value".into()))
    }
}

/// The function's secrets: read through from `SECRETS_ARN` when it is set (cached for
/// [`crate::secrets::SECRETS_TTL`]), else the inline values its config already holds.
pub fn secrets_cache(
    config: &aws_config::SdkConfig,
    secrets_arn: Option<String>,
) -> Option<crate::secrets::SecretsCache> {
    secrets_arn.map(|arn| {
        crate::secrets::SecretsCache::from_store(
            std::sync::Arc::new(SecretsManagerStore::new(config, arn)),
            crate::secrets::SECRETS_TTL,
        )
    })
}
