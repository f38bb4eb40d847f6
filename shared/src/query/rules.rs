//! `GET /v1/rules` and `PUT /v1/rules/{eventType}`: the scoring rules, as stored (defaults
//! written on first use).

use serde_json::{Map, Value};

use crate::body;
use crate::error::ApiError;
use crate::event::FieldError;
use crate::http::{HttpRequest, HttpResponse};
use crate::scoring::{load_or_init, put_rule, Rule, RuleStore, ScoreRules};

/// `GET /v1/rules`.
pub(crate) async fn get_rules(rules: &dyn RuleStore) -> Result<HttpResponse, ApiError> {
    let current = load_or_init(rules)
        .await
        .map_err(ApiError::analytics_down)?;
    Ok(HttpResponse::json(200, &current.rules.to_api_json()))
}

/// `PUT /v1/rules/{eventType}` with `{"points", "active"?, "maxPerDay"?}`.
pub(crate) async fn put(
    rules: &dyn RuleStore,
    event_type: &str,
    request: &HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let value = body::json(request)?;
    let rule = parse_rule(event_type, &value)?;
    ScoreRules::validate_rule(&rule).map_err(ApiError::validation)?;
    put_rule(rules, rule.clone())
        .await
        .map_err(ApiError::analytics_down)?;
    Ok(HttpResponse::json(
        200,
        &serde_json::to_value(&rule).unwrap_or(Value::Null),
    ))
}

/// The rule the body describes, with every problem named (messages never quote the input).
fn parse_rule(event_type: &str, value: &Value) -> Result<Rule, ApiError> {
    let Some(object) = value.as_object() else {
        return Err(ApiError::validation(vec![FieldError::new(
            "",
            "must be a JSON object",
        )]));
    };
    let mut errors = Vec::new();
    for key in object.keys() {
        if !["eventType", "points", "active", "maxPerDay"].contains(&key.as_str()) {
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
        Some(points) if errors.is_empty() => Ok(Rule {
            event_type: event_type.to_owned(),
            points,
            active: active.unwrap_or(true),
            max_per_day,
        }),
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
