//! Webhook signatures: Facebook's `X-Hub-Signature-256`, TikTok's `TikTok-Signature` and the
//! generic `X-Signature` (several `v1` values allowed for secret rotation), with a replay window.

use std::collections::HashMap;

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

use crate::error::ApiError;

type HmacSha256 = Hmac<Sha256>;

/// Signed requests more than this far from the server clock are refused (replay protection).
pub const REPLAY_WINDOW_SECONDS: i64 = 300;

/// Per-source secrets of the generic webhook route; a source may have several during rotation.
#[derive(Clone, Default)]
pub struct WebhookSecrets(HashMap<String, Vec<String>>);

impl std::fmt::Debug for WebhookSecrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut sources: Vec<&String> = self.0.keys().collect();
        sources.sort();
        write!(f, "WebhookSecrets({sources:?})")
    }
}

impl WebhookSecrets {
    /// `<source>=<secret>` pairs separated by commas; repeat a source to rotate.
    pub fn parse(spec: &str) -> Result<Self, String> {
        let mut map: HashMap<String, Vec<String>> = HashMap::new();
        for (i, entry) in spec
            .split(',')
            .map(str::trim)
            .filter(|e| !e.is_empty())
            .enumerate()
        {
            let (source, secret) = entry
                .split_once('=')
                .filter(|(s, k)| !s.trim().is_empty() && !k.trim().is_empty())
                .ok_or_else(|| format!("entry {} is not <source>=<secret>", i + 1))?;
            map.entry(source.trim().to_owned())
                .or_default()
                .push(secret.trim().to_owned());
        }
        Ok(Self(map))
    }

    pub fn for_source(&self, source: &str) -> Option<&[String]> {
        self.0.get(source).map(Vec::as_slice)
    }
}

/// Header values as a sender computes them (clients, sample payloads and tests use these).
pub fn sign_facebook(app_secret: &str, body: &[u8]) -> String {
    format!("sha256={}", hmac_hex(app_secret.as_bytes(), &[body]))
}

/// `t=<unix seconds>,<mac_key>=<hex>` for TikTok (`s`) and the generic route (`v1`).
pub fn sign_timestamped(secret: &str, mac_key: &str, unix_seconds: i64, body: &[u8]) -> String {
    let t = unix_seconds.to_string();
    format!(
        "t={t},{mac_key}={}",
        hmac_hex(secret.as_bytes(), &[t.as_bytes(), b".", body])
    )
}

pub fn hmac_hex(secret: &[u8], parts: &[&[u8]]) -> String {
    hex::encode(mac(secret, parts).finalize().into_bytes())
}

fn mac(secret: &[u8], parts: &[&[u8]]) -> HmacSha256 {
    // HMAC accepts keys of any length, so this cannot fail.
    let mut m = <HmacSha256 as KeyInit>::new_from_slice(secret).unwrap_or_else(|_| unreachable!());
    for p in parts {
        m.update(p);
    }
    m
}

/// At most this many MAC values in one signature header (secret rotation needs two or three).
pub const MAX_SIGNATURE_VALUES: usize = 5;
/// A signature header longer than this is refused unread.
pub const MAX_SIGNATURE_HEADER_BYTES: usize = 1024;
/// Hex digits of an HMAC-SHA256.
const MAC_HEX_LEN: usize = 64;

type Tag = [u8; 32];

/// A presented MAC: exactly 64 hex digits, else refused before any HMAC is computed.
fn presented_tag(hex_digits: &str) -> Result<Tag, ApiError> {
    let digits = hex_digits.trim();
    let mut tag = [0u8; 32];
    if digits.len() != MAC_HEX_LEN || hex::decode_to_slice(digits, &mut tag).is_err() {
        return Err(ApiError::InvalidSignature(
            "each signature must be 64 hex digits",
        ));
    }
    Ok(tag)
}

/// Whether any presented tag is the MAC of `parts` under any secret. Each secret's MAC is
/// computed once (the body is hashed once per secret, never per presented value), and every
/// comparison is constant-time.
fn any_matches(secrets: &[&[u8]], parts: &[&[u8]], presented: &[Tag]) -> bool {
    secrets.iter().any(|secret| {
        let expected = mac(secret, parts).finalize().into_bytes();
        presented
            .iter()
            .fold(subtle::Choice::from(0), |found, tag| {
                found | expected.as_slice().ct_eq(tag.as_slice())
            })
            .into()
    })
}

/// `X-Hub-Signature-256: sha256=<hex>` over the raw body. The header's shape is checked before
/// the body is hashed.
pub fn verify_facebook(
    app_secret: &str,
    header: Option<&str>,
    body: &[u8],
) -> Result<(), ApiError> {
    let header = header.ok_or(ApiError::MissingSignature(
        "X-Hub-Signature-256 is required",
    ))?;
    let hex = header
        .trim()
        .strip_prefix("sha256=")
        .ok_or(ApiError::InvalidSignature(
            "X-Hub-Signature-256 must be sha256=<hex>",
        ))?;
    let tag = presented_tag(hex)?;
    if any_matches(&[app_secret.as_bytes()], &[body], &[tag]) {
        Ok(())
    } else {
        Err(ApiError::InvalidSignature("signature does not match"))
    }
}

/// A timestamped signature header whose shape and time have been checked (no HMAC yet).
#[derive(Debug)]
pub struct TimestampedSignature<'h> {
    timestamp: &'h str,
    tags: Vec<Tag>,
}

impl<'h> TimestampedSignature<'h> {
    /// `t=<unix seconds>` plus one to [`MAX_SIGNATURE_VALUES`] MACs under `mac_key` (`s` for
    /// TikTok, `v1` for the generic route), each 64 hex digits, `t` within the replay window.
    pub fn parse(
        header: Option<&'h str>,
        header_name: &'static str,
        mac_key: &str,
        now_unix: i64,
    ) -> Result<Self, ApiError> {
        let header = header.ok_or(ApiError::MissingSignature(match header_name {
            "TikTok-Signature" => "TikTok-Signature is required",
            _ => "X-Signature is required",
        }))?;
        if header.len() > MAX_SIGNATURE_HEADER_BYTES {
            return Err(ApiError::InvalidSignature(
                "signature header is longer than 1024 bytes",
            ));
        }
        let mut timestamp = None;
        let mut tags = Vec::new();
        for part in header.split(',') {
            match part.trim().split_once('=') {
                Some(("t", t)) => timestamp = Some(t.trim()),
                Some((k, v)) if k == mac_key => {
                    if tags.len() == MAX_SIGNATURE_VALUES {
                        return Err(ApiError::InvalidSignature(
                            "a signature header carries at most 5 signatures",
                        ));
                    }
                    tags.push(presented_tag(v)?);
                }
                _ => {}
            }
        }
        let t = timestamp.ok_or(ApiError::InvalidSignature(
            "signature header has no t=<unix seconds>",
        ))?;
        let seconds: i64 = t
            .parse()
            .map_err(|_| ApiError::InvalidSignature("t must be unix seconds"))?;
        let within = now_unix
            .checked_sub(seconds)
            .and_then(i64::checked_abs)
            .is_some_and(|skew| skew <= REPLAY_WINDOW_SECONDS);
        if !within {
            return Err(ApiError::InvalidSignature(
                "signature timestamp is outside the 300 s window",
            ));
        }
        if tags.is_empty() {
            return Err(ApiError::InvalidSignature(
                "signature header carries no signature",
            ));
        }
        Ok(Self { timestamp: t, tags })
    }

    /// The HMAC check over `"<t>.<raw body>"`, once per secret.
    pub fn verify(&self, secrets: &[String], body: &[u8]) -> Result<(), ApiError> {
        let secrets: Vec<&[u8]> = secrets.iter().map(String::as_bytes).collect();
        let parts: [&[u8]; 3] = [self.timestamp.as_bytes(), b".", body];
        if any_matches(&secrets, &parts, &self.tags) {
            Ok(())
        } else {
            Err(ApiError::InvalidSignature("signature does not match"))
        }
    }
}

/// Parses and verifies a timestamped signature in one step.
pub fn verify_timestamped(
    secrets: &[String],
    header: Option<&str>,
    header_name: &'static str,
    mac_key: &str,
    body: &[u8],
    now_unix: i64,
) -> Result<(), ApiError> {
    TimestampedSignature::parse(header, header_name, mac_key, now_unix)?.verify(secrets, body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn facebook_signature() {
        let body = br#"{"object":"page"}"#;
        let good = format!("sha256={}", hmac_hex(b"app-secret", &[body]));
        assert!(verify_facebook("app-secret", Some(&good), body).is_ok());
        let tampered = br#"{"object":"pagE"}"#;
        assert_eq!(
            verify_facebook("app-secret", Some(&good), tampered).map_err(|e| e.status()),
            Err(403)
        );
        assert_eq!(
            verify_facebook("other", Some(&good), body).map_err(|e| e.status()),
            Err(403)
        );
        assert_eq!(
            verify_facebook("app-secret", None, body).map_err(|e| e.status()),
            Err(401)
        );
        assert_eq!(
            verify_facebook("app-secret", Some("sha1=abc"), body).map_err(|e| e.status()),
            Err(403)
        );
    }

    #[test]
    fn timestamped_signature_with_rotation_and_replay_window() {
        let body = b"[]";
        let now = 1_700_000_000;
        let sign = |secret: &str, t: i64| {
            hmac_hex(secret.as_bytes(), &[t.to_string().as_bytes(), b".", body])
        };
        let secrets = vec!["old".to_string(), "new".to_string()];
        let header = format!(
            "t={now},v1={},v1={}",
            sign("unknown", now),
            sign("new", now)
        );
        assert!(
            verify_timestamped(&secrets, Some(&header), "X-Signature", "v1", body, now).is_ok()
        );
        let stale = format!("t={},v1={}", now - 301, sign("new", now - 301));
        assert!(
            verify_timestamped(&secrets, Some(&stale), "X-Signature", "v1", body, now).is_err()
        );
        let edge = format!("t={},v1={}", now - 300, sign("old", now - 300));
        assert!(verify_timestamped(&secrets, Some(&edge), "X-Signature", "v1", body, now).is_ok());
        let tiktok = format!("t={now},s={}", sign("old", now));
        assert!(
            verify_timestamped(&secrets, Some(&tiktok), "TikTok-Signature", "s", body, now).is_ok()
        );
        assert!(
            verify_timestamped(&secrets, Some(&tiktok), "X-Signature", "v1", body, now).is_err()
        );
        assert_eq!(
            verify_timestamped(&secrets, None, "X-Signature", "v1", body, now)
                .map_err(|e| e.status()),
            Err(401)
        );
    }

    #[test]
    fn more_than_five_values_or_malformed_lengths_are_refused_even_beside_a_match() {
        let body = b"[]";
        let now = 1_700_000_000;
        let good = hmac_hex(b"k", &[now.to_string().as_bytes(), b".", body]);
        let secrets = vec!["k".to_string()];
        let check = |header: &str| {
            verify_timestamped(&secrets, Some(header), "X-Signature", "v1", body, now)
                .map_err(|e| e.to_string())
        };
        let five_wrong = format!(",v1={}", "0".repeat(64)).repeat(4);
        assert_eq!(check(&format!("t={now}{five_wrong},v1={good}")), Ok(()));
        let six = format!("t={now}{five_wrong},v1={},v1={good}", "1".repeat(64));
        assert!(check(&six).is_err_and(|e| e.contains("at most 5")), "{six}");
        for malformed in ["abc", &"0".repeat(63), &"0".repeat(65), &"g".repeat(64)] {
            let header = format!("t={now},v1={malformed},v1={good}");
            assert!(
                check(&header).is_err_and(|e| e.contains("64 hex digits")),
                "{header}"
            );
        }
        let long = format!("t={now},v1={good},x={}", "y".repeat(1024));
        assert!(check(&long).is_err_and(|e| e.contains("1024")));
        let facebook = format!("sha256={}", &hmac_hex(b"k", &[body])[..62]);
        assert!(verify_facebook("k", Some(&facebook), body)
            .is_err_and(|e| e.to_string().contains("64 hex digits")));
    }

    #[test]
    fn extreme_timestamps_are_outside_the_window_without_overflow() {
        let body = b"[]";
        let secrets = vec!["k".to_string()];
        for (t, now) in [
            (i64::MIN, 1_700_000_000),
            (i64::MAX, -1_700_000_000),
            (i64::MIN, i64::MAX),
            (i64::MAX, i64::MIN),
        ] {
            let header = format!("t={t},v1={}", "0".repeat(64));
            let result =
                verify_timestamped(&secrets, Some(&header), "X-Signature", "v1", body, now);
            assert!(
                result.is_err_and(|e| e.to_string().contains("outside")),
                "t={t} now={now}"
            );
        }
    }

    #[test]
    fn webhook_secrets_parse() {
        let s = WebhookSecrets::parse("shop=a, shop=b,crm=c").unwrap_or_default();
        assert_eq!(s.for_source("shop").map(<[String]>::len), Some(2));
        assert!(s.for_source("nope").is_none());
        assert!(WebhookSecrets::parse("shop").is_err());
    }
}
