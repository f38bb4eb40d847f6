//! The field rules of `docs/api.md`, written once and used both when client JSON is normalized and
//! when a typed event read back from the queue is re-validated.

use chrono::{DateTime, Duration, Utc};

use super::codes::is_country;
use super::money::{check_amount, check_currency};
use super::{Event, FieldError};

/// Time limits on event timestamps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub max_event_age_days: u32,
    pub max_future_skew_seconds: i64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_event_age_days: 30,
            max_future_skew_seconds: 300,
        }
    }
}

pub(crate) type Rule = Result<(), &'static str>;

pub(crate) fn event_id(s: &str) -> Rule {
    if s.is_empty() || s.len() > 128 {
        return Err("must be 1-128 characters");
    }
    if !s
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'@' | b'-'))
    {
        return Err("may contain only letters, digits and . _ : @ -");
    }
    Ok(())
}

pub(crate) fn event_type(s: &str) -> Rule {
    let bytes = s.as_bytes();
    let valid = matches!(bytes.first(), Some(b) if b.is_ascii_alphabetic())
        && bytes.len() <= 64
        && bytes[1..]
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b':' | b'-'));
    if valid {
        Ok(())
    } else {
        Err("must start with a letter and contain at most 64 letters, digits, _ . : -")
    }
}

pub(crate) fn source(s: &str) -> Rule {
    let valid = !s.is_empty()
        && s.len() <= 32
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
    if valid {
        Ok(())
    } else {
        Err("must be 1-32 characters of a-z, 0-9, _ and -")
    }
}

/// Identifiers and labels: non-empty, at most `max` characters, no control characters.
pub(crate) fn text(s: &str, max: usize) -> Rule {
    if s.is_empty() {
        return Err("must not be empty");
    }
    if s.chars().count() > max {
        return Err(too_long(max));
    }
    if s.chars().any(char::is_control) {
        return Err("must not contain control characters");
    }
    Ok(())
}

fn too_long(max: usize) -> &'static str {
    match max {
        32 => "must be at most 32 characters",
        64 => "must be at most 64 characters",
        128 => "must be at most 128 characters",
        _ => "must be at most 256 characters",
    }
}

/// A plausible address: one `@`, a non-empty local part, a dotted domain, no spaces.
pub(crate) fn email(s: &str) -> Rule {
    text(s, 256)?;
    let Some((local, domain)) = s.split_once('@') else {
        return Err("must be an email address");
    };
    let plausible = !local.is_empty()
        && local.len() <= 64
        && !domain.contains('@')
        && domain.contains('.')
        && domain.split('.').all(|label| !label.is_empty())
        && !s.chars().any(char::is_whitespace);
    if plausible {
        Ok(())
    } else {
        Err("must be an email address")
    }
}

pub(crate) fn country(s: &str, allow_names: bool) -> Rule {
    if is_country(s) {
        return Ok(());
    }
    if allow_names {
        return text(s, 64);
    }
    Err("must be an ISO 3166-1 alpha-2 country code such as US")
}

/// Publisher events may carry country names instead of codes (docs/api.md).
pub(crate) fn allows_country_names(source: &str) -> bool {
    matches!(source, "facebook" | "tiktok")
}

pub(crate) fn age(n: u64) -> Result<u8, &'static str> {
    u8::try_from(n)
        .ok()
        .filter(|a| *a <= 150)
        .ok_or("must be a whole number from 0 to 150")
}

pub(crate) fn timestamp(t: DateTime<Utc>, limits: &Limits, now: DateTime<Utc>) -> Rule {
    if t > now + Duration::seconds(limits.max_future_skew_seconds) {
        return Err("is more than 5 minutes in the future");
    }
    if t < now - Duration::days(i64::from(limits.max_event_age_days)) {
        return Err("is older than the maximum event age");
    }
    Ok(())
}

/// Every rule over a typed event; collects all failures rather than stopping at the first.
pub(crate) fn check_event(
    e: &Event,
    limits: &Limits,
    now: DateTime<Utc>,
) -> Result<(), Vec<FieldError>> {
    let mut errors = Vec::new();
    let mut check = |path: &'static str, rule: Rule| {
        if let Err(message) = rule {
            errors.push(FieldError::new(path, message));
        }
    };
    check("/eventId", event_id(&e.event_id));
    check("/type", event_type(&e.event_type));
    check("/timestamp", timestamp(e.timestamp, limits, now));
    check("/source", source(&e.source));
    let optional_text = |v: &Option<String>, max| v.as_deref().map_or(Ok(()), |s| text(s, max));
    check("/leadId", optional_text(&e.lead_id, 128));
    check("/userId", optional_text(&e.user_id, 128));
    check("/campaignId", optional_text(&e.campaign_id, 128));
    check("/regionId", optional_text(&e.region_id, 128));
    if let Some(lead) = &e.lead {
        check("/lead/email", lead.email.as_deref().map_or(Ok(()), email));
        check("/lead/name", optional_text(&lead.name, 256));
        check("/lead/company", optional_text(&lead.company, 256));
    }
    if let Some(m) = &e.revenue {
        check("/revenue/amount", check_amount(&m.amount));
        check("/revenue/currency", check_currency(&m.currency));
    }
    if let Some(u) = &e.user {
        check(
            "/user/age",
            u.age.map_or(Ok(()), |a| age(u64::from(a)).map(|_| ())),
        );
        check("/user/gender", optional_text(&u.gender, 32));
        let names = allows_country_names(&e.source);
        check(
            "/user/country",
            u.country.as_deref().map_or(Ok(()), |c| country(c, names)),
        );
        check("/user/city", optional_text(&u.city, 128));
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers() {
        assert!(event_id("fb:123@x.y_z-1").is_ok());
        assert!(event_id("").is_err());
        assert!(event_id("has space").is_err());
        assert!(event_id(&"a".repeat(129)).is_err());
        assert!(event_type("PURCHASE").is_ok() && event_type("user.signup").is_ok());
        assert!(event_type("1abc").is_err() && event_type("").is_err());
        assert!(event_type(&format!("a{}", "b".repeat(63))).is_ok());
        assert!(event_type(&format!("a{}", "b".repeat(64))).is_err());
        assert!(source("facebook").is_ok() && source("Facebook").is_err() && source("").is_err());
    }

    #[test]
    fn emails() {
        assert!(email("Ann@Example.com").is_ok());
        for bad in [
            "ann",
            "ann@",
            "@x.com",
            "ann@x",
            "a b@x.com",
            "a@b@c.com",
            "ann@x..com",
        ] {
            assert!(email(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn timestamps_window() {
        let now = Utc::now();
        let limits = Limits::default();
        assert!(timestamp(now, &limits, now).is_ok());
        assert!(timestamp(now + Duration::seconds(299), &limits, now).is_ok());
        assert!(timestamp(now + Duration::seconds(301), &limits, now).is_err());
        assert!(timestamp(now - Duration::days(29), &limits, now).is_ok());
        assert!(timestamp(now - Duration::days(31), &limits, now).is_err());
    }
}
