//! Exact money: a decimal amount with at most 4 fraction digits and an ISO 4217 currency.

use std::str::FromStr;

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::codes::is_currency;

pub const MAX_FRACTION_DIGITS: u32 = 4;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Money {
    /// Serialized as a decimal string so no binary float ever touches it.
    #[serde(with = "rust_decimal::serde::str")]
    pub amount: Decimal,
    pub currency: String,
}

/// Parses an amount given as a decimal string or a JSON number. A number is read through its
/// shortest round-trip text, so `12.3` is exactly 12.3; clients wanting exactness beyond 15
/// significant digits send strings.
pub(crate) fn parse_amount(value: &Value) -> Result<Decimal, &'static str> {
    let text;
    let s = match value {
        Value::String(s) => s.as_str(),
        Value::Number(n) => {
            text = n.to_string();
            text.as_str()
        }
        _ => return Err("must be a decimal string or a number"),
    };
    check_decimal_text(s)?;
    let amount = Decimal::from_str(s).map_err(|_| "must be a decimal number")?;
    check_amount(&amount)?;
    Ok(amount)
}

/// `-?digits(.digits)?`, nothing else (no exponent, no spaces, no `+`).
fn check_decimal_text(s: &str) -> Result<(), &'static str> {
    let digits = s.strip_prefix('-').unwrap_or(s);
    let (int, frac) = match digits.split_once('.') {
        Some((i, f)) => (i, Some(f)),
        None => (digits, None),
    };
    if int.is_empty() || !int.bytes().all(|b| b.is_ascii_digit()) {
        return Err("must be a decimal number such as 12.50");
    }
    if let Some(f) = frac {
        if f.is_empty() || !f.bytes().all(|b| b.is_ascii_digit()) {
            return Err("must be a decimal number such as 12.50");
        }
        if f.len() > MAX_FRACTION_DIGITS as usize {
            return Err("must have at most 4 fraction digits");
        }
    }
    // 10^12 has 13 integer digits; leading zeros aside, anything longer is out of range.
    if int.trim_start_matches('0').len() > 12 {
        return Err("absolute value must be less than 10^12");
    }
    Ok(())
}

pub(crate) fn check_amount(amount: &Decimal) -> Result<(), &'static str> {
    if amount.scale() > MAX_FRACTION_DIGITS {
        return Err("must have at most 4 fraction digits");
    }
    if amount.abs() >= Decimal::from(1_000_000_000_000_i64) {
        return Err("absolute value must be less than 10^12");
    }
    Ok(())
}

/// Uppercases and checks an ISO 4217 code.
pub(crate) fn parse_currency(value: &Value) -> Result<String, &'static str> {
    let s = value
        .as_str()
        .ok_or("must be an ISO 4217 currency code string")?;
    let upper = s.to_ascii_uppercase();
    if upper.len() != 3 || !is_currency(&upper) {
        return Err("must be an ISO 4217 currency code such as USD");
    }
    Ok(upper)
}

pub(crate) fn check_currency(code: &str) -> Result<(), &'static str> {
    if is_currency(code) {
        Ok(())
    } else {
        Err("must be an ISO 4217 currency code such as USD")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn amounts_are_exact_and_bounded() {
        assert_eq!(parse_amount(&json!("12.50")), Ok(Decimal::new(1250, 2)));
        assert_eq!(parse_amount(&json!(0.1)), Ok(Decimal::new(1, 1)));
        assert_eq!(parse_amount(&json!(-99)), Ok(Decimal::from(-99)));
        assert_eq!(
            parse_amount(&json!("999999999999.9999")),
            Ok(Decimal::new(9_999_999_999_999_999, 4))
        );
        assert!(parse_amount(&json!("1000000000000")).is_err());
        assert!(parse_amount(&json!("1.23456")).is_err());
        assert!(parse_amount(&json!("1e3")).is_err());
        assert!(parse_amount(&json!(" 1")).is_err());
        assert!(parse_amount(&json!("1.")).is_err());
        assert!(parse_amount(&json!(true)).is_err());
        assert!(parse_amount(&json!(1e20)).is_err());
    }

    #[test]
    fn currencies_are_iso_4217() {
        assert_eq!(parse_currency(&json!("eur")), Ok("EUR".to_string()));
        assert!(parse_currency(&json!("EURO")).is_err());
        assert!(parse_currency(&json!("QQQ")).is_err());
    }

    #[test]
    fn money_serializes_amount_as_string() {
        let m = Money {
            amount: Decimal::new(1250, 2),
            currency: "USD".into(),
        };
        assert_eq!(
            serde_json::to_value(&m).ok(),
            Some(json!({"amount": "12.50", "currency": "USD"}))
        );
    }
}
