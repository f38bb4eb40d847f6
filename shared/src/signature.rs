//! Webhook signatures: Facebook's `X-Hub-Signature-256`, TikTok's `TikTok-Signature` and the
//! generic `X-Signature` (several `v1` values allowed for secret rotation), with a replay window.

use std::collections::HashMap;

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

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

/// Constant-time check of a hex MAC over `parts`.
fn matches(secret: &[u8], parts: &[&[u8]], presented_hex: &str) -> bool {
    let Ok(presented) = hex::decode(presented_hex.trim()) else {
        return false;
    };
    mac(secret, parts).verify_slice(&presented).is_ok()
}

/// `X-Hub-Signature-256: sha256=<hex>` over the raw body.
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
    if matches(app_secret.as_bytes(), &[body], hex) {
        Ok(())
    } else {
        Err(ApiError::InvalidSignature("signature does not match"))
    }
}

/// The timestamped schemes: `t=<unix seconds>` plus one or more MACs of `"<t>.<body>"` under
/// `mac_key` (`s` for TikTok, `v1` for the generic route).
pub fn verify_timestamped(
    secrets: &[String],
    header: Option<&str>,
    header_name: &'static str,
    mac_key: &str,
    body: &[u8],
    now_unix: i64,
) -> Result<(), ApiError> {
    let header = header.ok_or(ApiError::MissingSignature(match header_name {
        "TikTok-Signature" => "TikTok-Signature is required",
        _ => "X-Signature is required",
    }))?;
    let mut timestamp = None;
    let mut macs = Vec::new();
    for part in header.split(',') {
        match part.trim().split_once('=') {
            Some(("t", t)) => timestamp = Some(t.trim()),
            Some((k, v)) if k == mac_key => macs.push(v),
            _ => {}
        }
    }
    let t = timestamp.ok_or(ApiError::InvalidSignature(
        "signature header has no t=<unix seconds>",
    ))?;
    let seconds: i64 = t
        .parse()
        .map_err(|_| ApiError::InvalidSignature("t must be unix seconds"))?;
    if (now_unix - seconds).abs() > REPLAY_WINDOW_SECONDS {
        return Err(ApiError::InvalidSignature(
            "signature timestamp is outside the 300 s window",
        ));
    }
    if macs.is_empty() {
        return Err(ApiError::InvalidSignature(
            "signature header carries no signature",
        ));
    }
    let parts: [&[u8]; 3] = [t.as_bytes(), b".", body];
    let ok = secrets
        .iter()
        .any(|secret| macs.iter().any(|m| matches(secret.as_bytes(), &parts, m)));
    if ok {
        Ok(())
    } else {
        Err(ApiError::InvalidSignature("signature does not match"))
    }
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
    fn webhook_secrets_parse() {
        let s = WebhookSecrets::parse("shop=a, shop=b,crm=c").unwrap_or_default();
        assert_eq!(s.for_source("shop").map(<[String]>::len), Some(2));
        assert!(s.for_source("nope").is_none());
        assert!(WebhookSecrets::parse("shop").is_err());
    }
}
