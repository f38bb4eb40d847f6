//! Query-string parameters: each read once, every problem collected, and all of them answered in
//! one 400 that names the fields.

use chrono::{DateTime, Datelike, NaiveDate, Utc};

use crate::error::ApiError;
use crate::event::FieldError;
use crate::http::HttpRequest;

pub(crate) struct QueryParams<'a> {
    request: &'a HttpRequest,
    errors: Vec<FieldError>,
}

impl<'a> QueryParams<'a> {
    /// Reads `request`'s parameters; any not in `allowed` is an error (a misspelt filter must
    /// not silently widen a query).
    pub(crate) fn new(request: &'a HttpRequest, allowed: &[&str]) -> Self {
        let mut unknown: Vec<&String> = request
            .query
            .keys()
            .filter(|k| !allowed.contains(&k.as_str()))
            .collect();
        unknown.sort();
        let errors = unknown
            .into_iter()
            .map(|k| FieldError::new(display_name(k), "is not a parameter of this route"))
            .collect();
        Self { request, errors }
    }

    pub(crate) fn error(&mut self, name: &str, message: impl Into<String>) {
        self.errors
            .push(FieldError::new(name.to_owned(), message.into()));
    }

    /// The value of `name`, or of its alias (both at once is an error).
    pub(crate) fn text(
        &mut self,
        name: &'static str,
        alias: Option<&'static str>,
    ) -> Option<&'a str> {
        let main = self.request.query(name);
        let other = alias.and_then(|a| self.request.query(a));
        match (main, other, alias) {
            (Some(_), Some(_), Some(alias)) => {
                self.error(name, format!("give {name} or {alias}, not both"));
                None
            }
            (Some(v), _, _) | (None, Some(v), _) => Some(v),
            (None, None, _) => None,
        }
    }

    pub(crate) fn required(
        &mut self,
        name: &'static str,
        alias: Option<&'static str>,
    ) -> Option<&'a str> {
        let value = self.text(name, alias);
        if value.is_none() && !self.errors.iter().any(|e| e.path == name) {
            self.error(name, "is required");
        }
        value
    }

    /// An instant: RFC 3339 with any offset, or epoch milliseconds.
    pub(crate) fn instant(
        &mut self,
        name: &'static str,
        alias: Option<&'static str>,
    ) -> Option<DateTime<Utc>> {
        let value = self.required(name, alias)?;
        match parse_instant(value) {
            Ok(t) => Some(t),
            Err(message) => {
                self.error(name, message);
                None
            }
        }
    }

    /// A report bound: an instant, or a UTC date `YYYY-MM-DD` meaning the start of that day —
    /// or, when `end_of_day`, its end (so `to=2026-11-25` includes the whole 25th).
    pub(crate) fn report_bound(
        &mut self,
        name: &'static str,
        end_of_day: bool,
    ) -> Option<DateTime<Utc>> {
        let value = self.required(name, None)?;
        if let Ok(day) = NaiveDate::parse_from_str(value.trim(), "%Y-%m-%d") {
            let day = if end_of_day {
                day.succ_opt()
            } else {
                Some(day)
            };
            if let Some(start) = day.and_then(|d| d.and_hms_opt(0, 0, 0)) {
                let start = start.and_utc();
                if within_years(start) {
                    return Some(start);
                }
                self.error(name, OUT_OF_RANGE);
                return None;
            }
        }
        match parse_instant(value) {
            Ok(t) => Some(t),
            Err(OUT_OF_RANGE) => {
                self.error(name, OUT_OF_RANGE);
                None
            }
            Err(_) => {
                self.error(
                    name,
                    "must be a date YYYY-MM-DD, an RFC 3339 time or epoch milliseconds",
                );
                None
            }
        }
    }

    /// An integer in `min..=max`, `default` when absent.
    pub(crate) fn integer(
        &mut self,
        name: &'static str,
        min: u32,
        max: u32,
        default: u32,
    ) -> Option<u32> {
        let Some(value) = self.text(name, None) else {
            return Some(default);
        };
        match value.trim().parse::<u32>() {
            Ok(n) if (min..=max).contains(&n) => Some(n),
            _ => {
                self.error(name, format!("must be an integer from {min} to {max}"));
                None
            }
        }
    }

    /// One of `choices`, or an error listing them.
    pub(crate) fn choice<T: Copy>(
        &mut self,
        name: &'static str,
        value: Option<&str>,
        choices: &[(&str, T)],
    ) -> Option<T> {
        let value = value?;
        let found = choices.iter().find(|(k, _)| *k == value).map(|(_, v)| *v);
        if found.is_none() {
            let names: Vec<&str> = choices.iter().map(|(k, _)| *k).collect();
            self.error(name, format!("must be one of {}", names.join(", ")));
        }
        found
    }

    /// The collected problems as one 400, or the values read.
    pub(crate) fn finish<T>(self, value: Option<T>) -> Result<T, ApiError> {
        match (self.errors.is_empty(), value) {
            (true, Some(value)) => Ok(value),
            (true, None) => Err(ApiError::Internal),
            (false, _) => Err(ApiError::validation(self.errors)),
        }
    }
}

/// Parameter names are echoed in errors; anything odd is replaced so nothing is echoed raw.
fn display_name(name: &str) -> String {
    if !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
    {
        name.to_owned()
    } else {
        "(unnamed parameter)".to_owned()
    }
}

const OUT_OF_RANGE: &str = "is out of range (years 1 to 9999)";

/// Whether `t` is in years 1 to 9999. Ranges are aligned outward and walked day by day, so an
/// instant near the end of what the clock type holds would overflow; no data lives there.
fn within_years(t: DateTime<Utc>) -> bool {
    (1..=9999).contains(&t.year())
}

fn parse_instant(value: &str) -> Result<DateTime<Utc>, &'static str> {
    let value = value.trim();
    let digits = value.strip_prefix('-').unwrap_or(value);
    let t = if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
        value
            .parse::<i64>()
            .ok()
            .and_then(DateTime::from_timestamp_millis)
            .ok_or(OUT_OF_RANGE)?
    } else {
        DateTime::parse_from_rfc3339(value)
            .map(|t| t.with_timezone(&Utc))
            .map_err(|_| "must be an RFC 3339 time or epoch milliseconds")?
    };
    if within_years(t) {
        Ok(t)
    } else {
        Err(OUT_OF_RANGE)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instants_in_every_accepted_form() {
        let noon = DateTime::parse_from_rfc3339("2026-11-25T12:00:00Z")
            .map(|t| t.with_timezone(&Utc))
            .ok();
        assert_eq!(parse_instant("2026-11-25T12:00:00Z").ok(), noon);
        assert_eq!(parse_instant("2026-11-25T14:00:00+02:00").ok(), noon);
        assert_eq!(parse_instant(" 1795608000000 ").ok(), noon);
        assert_eq!(
            parse_instant("-1000").ok(),
            DateTime::from_timestamp_millis(-1000)
        );
        for bad in [
            "",
            "-",
            "2026-11-25",
            "12:00",
            "1e12",
            "99999999999999999999",
            "8210298412799999",
            "-8210266876800000",
            "253402300800000",
        ] {
            assert!(parse_instant(bad).is_err(), "{bad:?}");
        }
    }
}
