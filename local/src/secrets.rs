//! The template's `AWS::SecretsManager::Secret` resources, created in moto's Secrets Manager with
//! their `SecretString` resolved as the functions' environment is (parameters, `!Ref`, `!Sub`),
//! so the functions read their keys and webhook secrets the way they do in AWS.

use std::collections::HashMap;

use anyhow::{Context, Result};
use serde_yaml::Value;

use crate::functions::{resolve, LocalResources};

/// Creates every secret of `template_text`; returns logical id → ARN (the secret's `!Ref`).
pub async fn create(
    template_text: &str,
    resources: &LocalResources<'_>,
    moto_endpoint: &str,
    prefix: &str,
) -> Result<HashMap<String, String>> {
    let doc: Value = serde_yaml::from_str(template_text)?;
    let Some(all) = doc.get("Resources").and_then(Value::as_mapping) else {
        return Ok(HashMap::new());
    };
    let client = aws_sdk_secretsmanager::Client::new(&crate::sdk_config(moto_endpoint));
    let mut arns = HashMap::new();
    for (id, resource) in all {
        let (Some(id), Some("AWS::SecretsManager::Secret")) =
            (id.as_str(), resource.get("Type").and_then(Value::as_str))
        else {
            continue;
        };
        let value = resource
            .get("Properties")
            .and_then(|p| p.get("SecretString"))
            .with_context(|| format!("{id}: only SecretString secrets are supported locally"))?;
        let secret = resolve(value, resources).with_context(|| format!("{id}: SecretString"))?;
        // A fresh name each start: moto may still hold the last run's.
        let name = format!("{prefix}-{id}-{}", uuid::Uuid::new_v4().simple());
        let output = client
            .create_secret()
            .name(name)
            .secret_string(secret)
            .send()
            .await
            .with_context(|| format!("creating secret {id} in moto"))?;
        arns.insert(
            id.to_owned(),
            output.arn.context("CreateSecret returned no ARN")?,
        );
    }
    Ok(arns)
}
