//! `GET /v1/scoring` and `PUT /v1/scoring`: the score's bounds, decay and lead stages, versioned
//! with the rules (one stored set), so a write based on a stale read is a `409`.

use serde::Deserialize;

use crate::body;
use crate::error::ApiError;
use crate::event::FieldError;
use crate::http::{HttpRequest, HttpResponse};
use crate::scoring::{
    load_or_init, put_settings, Decay, RuleStore, RuleStoreError, ScoringSettings, Stage,
};

/// `GET /v1/scoring`.
pub(crate) async fn get(rules: &dyn RuleStore) -> Result<HttpResponse, ApiError> {
    let current = load_or_init(rules)
        .await
        .map_err(ApiError::analytics_down)?;
    Ok(HttpResponse::json(
        200,
        &current.rules.scoring_json(current.version),
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Bounds {
    min: i64,
    max: i64,
}

/// The body of `PUT /v1/scoring`: the `GET` body with the version read.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SettingsBody {
    score: Bounds,
    decay: Decay,
    stages: Vec<Stage>,
    version: u64,
}

/// `PUT /v1/scoring`: `200` with the new settings and version, `409` when the set changed since
/// `version` was read.
pub(crate) async fn put(
    rules: &dyn RuleStore,
    request: &HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let value = body::json(request)?;
    // serde's own messages quote the input, so they are not passed on.
    let body: SettingsBody = serde_json::from_value(value).map_err(|_| {
        ApiError::validation(vec![FieldError::new(
            "",
            "must be {\"score\": {\"min\", \"max\"}, \"decay\": {\"afterDays\", \"percentPerDay\"}, \
             \"stages\": [{\"name\", \"minScore\"}], \"version\"} with integers, and nothing else",
        )])
    })?;
    let settings = ScoringSettings {
        min: body.score.min,
        max: body.score.max,
        decay: body.decay,
        stages: body.stages,
    };
    match put_settings(rules, settings, body.version, |set| set.validate()).await {
        Ok(Ok(saved)) => Ok(HttpResponse::json(
            200,
            &saved.rules.scoring_json(saved.version),
        )),
        Ok(Err(errors)) => Err(ApiError::validation(errors)),
        Err(RuleStoreError::Conflict) => Err(ApiError::Conflict(
            "the scoring settings or rules changed since this version was read; read them again"
                .into(),
        )),
        Err(RuleStoreError::Store(e)) => Err(ApiError::analytics_down(e)),
    }
}
