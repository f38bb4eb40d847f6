//! Client JSON → [`Event`]: resolves every accepted spelling (docs/api.md, "Other spellings accepted"),
//! maps the marketing-publisher format, applies the field rules and reports every failing field
//! with the path the client used.

use std::borrow::Cow;

use chrono::{DateTime, Utc};
use serde_json::{Map, Value};
use uuid::Uuid;

use super::money::{parse_amount, parse_currency};
use super::rules::{self, Limits, Rule};
use super::{parse_instant, Demographics, Event, FieldError, FunnelStage, LeadProfile, Money};

/// What normalization needs besides the JSON: the clock it was received at and route defaults.
#[derive(Debug, Clone, Copy)]
pub struct NormalizeContext<'a> {
    pub received_at: DateTime<Utc>,
    pub limits: Limits,
    /// `source` when the event names none (`api`, or the webhook's source).
    pub default_source: &'a str,
}

const TOP_LEVEL_FIELDS: &[&str] = &[
    "eventId",
    "type",
    "eventType",
    "event_type",
    "timestamp",
    "occurredAt",
    "source",
    "leadId",
    "userId",
    "lead",
    "campaignId",
    "regionId",
    "funnelStage",
    "revenue",
    "user",
    "payload",
    "metadata",
];

/// Normalizes one submitted event. Takes the JSON by value so payloads move instead of copying.
pub fn normalize(value: Value, ctx: &NormalizeContext<'_>) -> Result<Event, Vec<FieldError>> {
    let Value::Object(mut map) = value else {
        return Err(vec![FieldError::new("", "an event must be a JSON object")]);
    };
    let mut errors = Errors::default();

    let source = match map.remove("source") {
        None | Some(Value::Null) => ctx.default_source.to_owned(),
        Some(v) => errors
            .string(v, "/source", rules::source)
            .unwrap_or_default(),
    };
    let publisher =
        rules::allows_country_names(&source) && map.get("data").is_some_and(Value::is_object);
    let data = if publisher { map.remove("data") } else { None };

    for key in map
        .keys()
        .filter(|k| !TOP_LEVEL_FIELDS.contains(&k.as_str()))
    {
        errors.push(pointer(key), "unknown field");
    }

    let event_id = match map.remove("eventId") {
        None | Some(Value::Null) => Some(Uuid::now_v7().to_string()),
        Some(v) => errors.string(v, "/eventId", rules::event_id),
    };
    let event_type = match take_alias(&mut map, &["type", "eventType", "event_type"], &mut errors) {
        Some((v, path)) => errors.string(v, path, rules::event_type),
        None => {
            errors.push("/type", "is required");
            None
        }
    };
    let timestamp = match take_alias(&mut map, &["timestamp", "occurredAt"], &mut errors) {
        None | Some((Value::Null, _)) => Some(ctx.received_at),
        Some((v, path)) => match parse_instant(&v) {
            Ok(t) => errors
                .check(path, rules::timestamp(t, &ctx.limits, ctx.received_at))
                .then_some(t),
            Err(message) => errors.fail(path, message),
        },
    };

    let payload = match map.remove("payload") {
        None | Some(Value::Null) => None,
        Some(Value::Object(m)) => Some(m),
        Some(_) => errors.fail("/payload", "must be an object"),
    };
    let metadata = match map.remove("metadata") {
        None | Some(Value::Null) => None,
        Some(Value::Object(m)) => Some(m),
        Some(_) => errors.fail("/metadata", "must be an object"),
    };
    if payload.is_some() && data.is_some() {
        errors.push(
            "/payload",
            "cannot be combined with publisher `data` (which becomes the payload)",
        );
    }
    let data = data.and_then(|d| match d {
        Value::Object(m) => Some(m),
        _ => None,
    });

    // Each dimension: top level first, then its spelling inside `payload`, then publisher `data`.
    let user_id = first_text(&mut map, "userId", "/userId", 128, &mut errors)
        .or_else(|| {
            alias_text(
                payload.as_ref(),
                "userId",
                "/payload/userId",
                128,
                &mut errors,
            )
        })
        .or_else(|| {
            let id = data.as_ref().and_then(|d| at(d, &["user", "userId"]))?;
            id_like(id, "/data/user/userId", &mut errors)
        });
    let campaign_id = first_text(&mut map, "campaignId", "/campaignId", 128, &mut errors)
        .or_else(|| {
            alias_text(
                payload.as_ref(),
                "campaignId",
                "/payload/campaignId",
                128,
                &mut errors,
            )
        })
        .or_else(|| {
            let id = data
                .as_ref()
                .and_then(|d| at(d, &["engagement", "campaignId"]))?;
            id_like(id, "/data/engagement/campaignId", &mut errors)
        });
    let region_id = first_text(&mut map, "regionId", "/regionId", 128, &mut errors).or_else(|| {
        alias_text(
            payload.as_ref(),
            "regionId",
            "/payload/regionId",
            128,
            &mut errors,
        )
    });
    let funnel_stage = match map.remove("funnelStage") {
        None | Some(Value::Null) => payload
            .as_ref()
            .and_then(|p| p.get("funnelStage"))
            .filter(|v| !v.is_null())
            .and_then(|v| funnel(v, "/payload/funnelStage", &mut errors)),
        Some(v) => funnel(&v, "/funnelStage", &mut errors),
    };

    let lead = match map.remove("lead") {
        None | Some(Value::Null) => metadata
            .as_ref()
            .and_then(|m| lead_from_metadata(m, &mut errors)),
        Some(Value::Object(m)) => lead_profile(m, &mut errors),
        Some(_) => errors.fail("/lead", "must be an object"),
    };
    let lead_id = first_text(&mut map, "leadId", "/leadId", 128, &mut errors);

    let revenue = match map.remove("revenue") {
        None | Some(Value::Null) => data
            .as_ref()
            .and_then(|d| at(d, &["engagement", "purchaseAmount"]))
            .filter(|v| !v.is_null())
            .and_then(|v| match parse_amount(v) {
                Ok(amount) => Some(Money {
                    amount,
                    currency: "USD".into(),
                }),
                Err(message) => errors.fail("/data/engagement/purchaseAmount", message),
            }),
        Some(Value::Object(m)) => money(m, &mut errors),
        Some(_) => errors.fail("/revenue", "must be an object {amount, currency}"),
    };

    let user = match map.remove("user") {
        None | Some(Value::Null) => data.as_ref().and_then(|d| publisher_user(d, &mut errors)),
        Some(Value::Object(m)) => {
            demographics(m, rules::allows_country_names(&source), &mut errors)
        }
        Some(_) => errors.fail("/user", "must be an object"),
    };

    if !errors.0.is_empty() {
        return Err(errors.0);
    }
    let (Some(event_id), Some(event_type), Some(timestamp)) = (event_id, event_type, timestamp)
    else {
        return Err(vec![FieldError::new("", "event is incomplete")]);
    };
    let lead_id = match lead_id {
        Some(id) => Some(id),
        None => match derive_lead_id(lead.as_ref(), user_id.as_deref()) {
            Some((id, from)) if rules::text(&id, 128).is_err() => {
                return Err(vec![FieldError::new(
                    from,
                    "is too long to derive a leadId from (at most 128 characters with its \
                     email: or user: prefix); send a shorter value or a leadId",
                )]);
            }
            derived => derived.map(|(id, _)| id),
        },
    };
    let event = Event {
        event_id,
        event_type,
        timestamp,
        source,
        lead_id,
        user_id,
        lead,
        campaign_id,
        region_id,
        funnel_stage,
        revenue,
        user,
        payload: payload.or(data),
        metadata,
    };
    // What `process` checks again when it stores the event, so nothing accepted here is
    // rejected there (it re-validates against the same `receivedAt`).
    rules::check_event(&event, &ctx.limits, ctx.received_at)?;
    Ok(event)
}

/// `email:<lowercased email>`, else `user:<userId>`, else none (aggregated, not scored); with
/// the path of the field it came from.
fn derive_lead_id(
    lead: Option<&LeadProfile>,
    user_id: Option<&str>,
) -> Option<(String, &'static str)> {
    if let Some(email) = lead.and_then(|l| l.email.as_deref()) {
        return Some((format!("email:{}", email.to_lowercase()), "/lead/email"));
    }
    user_id.map(|u| (format!("user:{u}"), "/userId"))
}

#[derive(Default)]
struct Errors(Vec<FieldError>);

impl Errors {
    fn push(&mut self, path: impl Into<Cow<'static, str>>, message: &'static str) {
        self.0.push(FieldError::new(path, message));
    }

    fn fail<T>(&mut self, path: impl Into<Cow<'static, str>>, message: &'static str) -> Option<T> {
        self.push(path, message);
        None
    }

    fn check(&mut self, path: &'static str, rule: Rule) -> bool {
        match rule {
            Ok(()) => true,
            Err(message) => {
                self.push(path, message);
                false
            }
        }
    }

    fn string(&mut self, v: Value, path: &'static str, rule: fn(&str) -> Rule) -> Option<String> {
        match v {
            Value::String(s) => self.check(path, rule(&s)).then_some(s),
            _ => self.fail(path, "must be a string"),
        }
    }

    fn text(&mut self, v: &Value, path: &'static str, max: usize) -> Option<String> {
        match v {
            Value::String(s) => self.check(path, rules::text(s, max)).then(|| s.clone()),
            _ => self.fail(path, "must be a string"),
        }
    }
}

/// Removes every spelling of one field; two spellings with different values are an error.
fn take_alias(
    map: &mut Map<String, Value>,
    names: &[&'static str],
    errors: &mut Errors,
) -> Option<(Value, &'static str)> {
    let mut found: Option<(Value, &'static str)> = None;
    for name in names {
        let Some(v) = map.remove(*name) else { continue };
        match &found {
            Some((first, _)) if *first != v => {
                errors.push(
                    pointer(name),
                    "conflicts with another spelling of the same field",
                );
            }
            Some(_) => {}
            None => found = Some((v, pointer_static(name))),
        }
    }
    found
}

fn first_text(
    map: &mut Map<String, Value>,
    key: &str,
    path: &'static str,
    max: usize,
    errors: &mut Errors,
) -> Option<String> {
    match map.remove(key) {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => errors.check(path, rules::text(&s, max)).then_some(s),
        Some(_) => errors.fail(path, "must be a string"),
    }
}

fn alias_text(
    payload: Option<&Map<String, Value>>,
    key: &str,
    path: &'static str,
    max: usize,
    errors: &mut Errors,
) -> Option<String> {
    let v = payload?.get(key).filter(|v| !v.is_null())?;
    errors.text(v, path, max)
}

/// Publisher ids may arrive as numbers; they are kept as their decimal text.
fn id_like(v: &Value, path: &'static str, errors: &mut Errors) -> Option<String> {
    match v {
        Value::Null => None,
        Value::Number(n) => Some(n.to_string()),
        _ => errors.text(v, path, 128),
    }
}

fn at<'a>(map: &'a Map<String, Value>, path: &[&str]) -> Option<&'a Value> {
    let (first, rest) = path.split_first()?;
    rest.iter().try_fold(map.get(*first)?, |v, key| v.get(*key))
}

fn funnel(v: &Value, path: &'static str, errors: &mut Errors) -> Option<FunnelStage> {
    let stage = v
        .as_str()
        .and_then(|s| FunnelStage::parse(&s.to_ascii_lowercase()));
    if stage.is_none() {
        errors.push(path, "must be one of top, middle, bottom");
    }
    stage
}

fn lead_profile(map: Map<String, Value>, errors: &mut Errors) -> Option<LeadProfile> {
    let mut lead = LeadProfile::default();
    for (key, v) in map {
        if v.is_null() {
            continue;
        }
        match key.as_str() {
            "email" => lead.email = email(&v, "/lead/email", errors),
            "name" => lead.name = errors.text(&v, "/lead/name", 256),
            "company" => lead.company = errors.text(&v, "/lead/company", 256),
            _ => errors.push(format!("/lead/{}", escape(&key)), "unknown field"),
        }
    }
    Some(lead)
}

fn lead_from_metadata(metadata: &Map<String, Value>, errors: &mut Errors) -> Option<LeadProfile> {
    let field = |k: &str| metadata.get(k).filter(|v| !v.is_null());
    let lead = LeadProfile {
        email: field("email").and_then(|v| email(v, "/metadata/email", errors)),
        name: field("name").and_then(|v| errors.text(v, "/metadata/name", 256)),
        company: field("company").and_then(|v| errors.text(v, "/metadata/company", 256)),
    };
    (lead != LeadProfile::default()).then_some(lead)
}

fn email(v: &Value, path: &'static str, errors: &mut Errors) -> Option<String> {
    match v {
        Value::String(s) => errors.check(path, rules::email(s)).then(|| s.clone()),
        _ => errors.fail(path, "must be a string"),
    }
}

fn money(map: Map<String, Value>, errors: &mut Errors) -> Option<Money> {
    let mut amount = None;
    let mut currency = Some("USD".to_owned());
    let mut has_amount = false;
    for (key, v) in map {
        match key.as_str() {
            "amount" => {
                has_amount = true;
                amount = parse_amount(&v)
                    .map_err(|m| errors.push("/revenue/amount", m))
                    .ok();
            }
            "currency" if !v.is_null() => {
                currency = parse_currency(&v)
                    .map_err(|m| errors.push("/revenue/currency", m))
                    .ok();
            }
            "currency" => {}
            _ => errors.push(format!("/revenue/{}", escape(&key)), "unknown field"),
        }
    }
    if !has_amount {
        errors.push("/revenue/amount", "is required");
    }
    Some(Money {
        amount: amount?,
        currency: currency?,
    })
}

fn demographics(
    map: Map<String, Value>,
    country_names: bool,
    errors: &mut Errors,
) -> Option<Demographics> {
    let mut user = Demographics::default();
    for (key, v) in map {
        if v.is_null() {
            continue;
        }
        match key.as_str() {
            "age" => user.age = age(&v, "/user/age", errors),
            "gender" => user.gender = errors.text(&v, "/user/gender", 32),
            "country" => user.country = country(&v, "/user/country", country_names, errors),
            "city" => user.city = errors.text(&v, "/user/city", 128),
            "followers" => user.followers = followers(&v, "/user/followers", errors),
            _ => errors.push(format!("/user/{}", escape(&key)), "unknown field"),
        }
    }
    Some(user)
}

/// `data.user` of a publisher event; fields other than the mapped ones stay in the payload only.
fn publisher_user(data: &Map<String, Value>, errors: &mut Errors) -> Option<Demographics> {
    let user = data.get("user")?.as_object()?;
    let field = |path: &[&str]| {
        path.split_first()
            .and_then(|(first, rest)| rest.iter().try_fold(user.get(*first)?, |v, k| v.get(*k)))
            .filter(|v| !v.is_null())
    };
    let demo = Demographics {
        age: field(&["age"]).and_then(|v| age(v, "/data/user/age", errors)),
        gender: field(&["gender"]).and_then(|v| errors.text(v, "/data/user/gender", 32)),
        country: field(&["location", "country"])
            .and_then(|v| country(v, "/data/user/location/country", true, errors)),
        city: field(&["location", "city"])
            .and_then(|v| errors.text(v, "/data/user/location/city", 128)),
        followers: field(&["followers"]).and_then(|v| followers(v, "/data/user/followers", errors)),
    };
    (demo != Demographics::default()).then_some(demo)
}

fn age(v: &Value, path: &'static str, errors: &mut Errors) -> Option<u8> {
    match v.as_u64().map(rules::age) {
        Some(Ok(a)) => Some(a),
        _ => errors.fail(path, "must be a whole number from 0 to 150"),
    }
}

fn followers(v: &Value, path: &'static str, errors: &mut Errors) -> Option<u64> {
    v.as_u64()
        .or_else(|| errors.fail(path, "must be a whole number of at least 0"))
}

fn country(
    v: &Value,
    path: &'static str,
    allow_names: bool,
    errors: &mut Errors,
) -> Option<String> {
    let Some(s) = v.as_str() else {
        return errors.fail(path, "must be a string");
    };
    let code = if s.len() == 2 {
        s.to_ascii_uppercase()
    } else {
        s.to_owned()
    };
    errors
        .check(path, rules::country(&code, allow_names))
        .then_some(code)
}

/// JSON pointer of a client-supplied key, escaped per RFC 6901 and cut to a sane length.
fn pointer(key: &str) -> String {
    format!("/{}", escape(key))
}

fn escape(key: &str) -> String {
    key.chars()
        .take(64)
        .collect::<String>()
        .replace('~', "~0")
        .replace('/', "~1")
}

fn pointer_static(name: &'static str) -> &'static str {
    match name {
        "type" => "/type",
        "eventType" => "/eventType",
        "event_type" => "/event_type",
        "timestamp" => "/timestamp",
        _ => "/occurredAt",
    }
}

#[cfg(test)]
mod tests;
