//! `GET /v1/rules` and `PUT /v1/rules/{eventType}`: the scoring rules, as stored (defaults
//! written on first use), with the version they share with the scoring settings. A `PUT` that
//! names the version it read is refused with `409` when anyone changed the set since, so an editor
//! never overwrites a change it has not seen; one without a version applies on top of whatever is
//! stored.

use serde_json::{json, Map, Value};

use crate::body;
use crate::error::ApiError;
use crate::event::FieldError;
use crate::http::{HttpRequest, HttpResponse};
use crate::scoring::{
    load_or_init, put_rule, put_rule_at, Rule, RuleStore, RuleStoreError, ScoreRules,
};

/// `GET /v1/rules`.
pub(crate) async fn get_rules(rules: &dyn RuleStore) -> Result<HttpResponse, ApiError> {
    let current = load_or_init(rules)
        .await
        .map_err(ApiError::analytics_down)?;
    let mut body = current.rules.to_api_json();
    body["version"] = json!(current.version);
    Ok(HttpResponse::json(200, &body))
}

/// `PUT /v1/rules/{eventType}` with `{"points", "active"?, "maxPerDay"?, "version"?}`: `200` with
/// the rule and the set's new version.
pub(crate) async fn put(
    rules: &dyn RuleStore,
    event_type: &str,
    request: &HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let value = body::json(request)?;
    let (rule, expected) = parse_rule(event_type, &value)?;
    ScoreRules::validate_rule(&rule).map_err(ApiError::validation)?;
    let saved = match expected {
        None => put_rule(rules, rule.clone())
            .await
            .map_err(ApiError::analytics_down)?,
        Some(version) => match put_rule_at(rules, rule.clone(), version).await {
            Ok(saved) => saved,
            Err(RuleStoreError::Conflict) => {
                return Err(ApiError::Conflict(
                    "the rules or scoring settings changed since this version was read; read \
                     them again"
                        .into(),
                ))
            }
            Err(RuleStoreError::Store(e)) => return Err(ApiError::analytics_down(e)),
        },
    };
    let mut body = serde_json::to_value(&rule).unwrap_or(Value::Null);
    body["version"] = json!(saved.version);
    Ok(HttpResponse::json(200, &body))
}

/// The rule the body describes and the version it was based on, with every problem named
/// (messages never quote the input).
fn parse_rule(event_type: &str, value: &Value) -> Result<(Rule, Option<u64>), ApiError> {
    let Some(object) = value.as_object() else {
        return Err(ApiError::validation(vec![FieldError::new(
            "",
            "must be a JSON object",
        )]));
    };
    let mut errors = Vec::new();
    for key in object.keys() {
        if !["eventType", "points", "active", "maxPerDay", "version"].contains(&key.as_str()) {
            errors.push(FieldError::new(
                format!("/{}", pointer_token(key)),
                "is not a field of a rule",
            ));
        }
    }
    if object
        .get("eventType")
        .is_some_and(|t| t.as_str() != Some(event_type))
    {
        errors.push(FieldError::new(
            "/eventType",
            "must equal the event type in the path when given",
        ));
    }
    let points = field(
        object,
        "points",
        &mut errors,
        |v| v.as_i64(),
        "must be an integer",
    );
    if !object.contains_key("points") {
        errors.push(FieldError::new("/points", "is required"));
    }
    let version = field(
        object,
        "version",
        &mut errors,
        Value::as_u64,
        "must be the version read from GET /v1/rules or GET /v1/scoring",
    );
    let active = field(
        object,
        "active",
        &mut errors,
        Value::as_bool,
        "must be true or false",
    );
    let max_per_day = match object.get("maxPerDay") {
        None | Some(Value::Null) => None,
        Some(v) => match v.as_u64().and_then(|n| u32::try_from(n).ok()) {
            Some(n) => Some(n),
            None => {
                errors.push(FieldError::new(
                    "/maxPerDay",
                    "must be a positive integer or null",
                ));
                None
            }
        },
    };
    match points {
        Some(points) if errors.is_empty() => Ok((
            Rule {
                event_type: event_type.to_owned(),
                points,
                active: active.unwrap_or(true),
                max_per_day,
            },
            version,
        )),
        _ => Err(ApiError::validation(errors)),
    }
}

fn field<T>(
    object: &Map<String, Value>,
    name: &str,
    errors: &mut Vec<FieldError>,
    read: impl Fn(&Value) -> Option<T>,
    message: &'static str,
) -> Option<T> {
    let value = object.get(name)?;
    let parsed = read(value);
    if parsed.is_none() {
        errors.push(FieldError::new(format!("/{name}"), message));
    }
    parsed
}

/// An unknown key as a JSON-pointer token, cut short and limited to safe characters.
fn pointer_token(key: &str) -> String {
    let safe: String = key
        .chars()
        .take(64)
        .map(|c| {
            if c.is_ascii_alphanumeric() || "_.-".contains(c) {
                c
            } else {
                '?'
            }
        })
        .collect();
    safe
}
