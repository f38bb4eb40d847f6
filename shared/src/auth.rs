//! Bearer keys, configured as SHA-256 digests with a scope each, compared in constant time.

use std::sync::Arc;

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::error::ApiError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    Ingest,
    Read,
    Admin,
    /// A publishable browser key: posts events of allowed types from its origins only.
    Track,
}

impl Scope {
    fn parse(s: &str) -> Option<Self> {
        match s {
            "ingest" => Some(Self::Ingest),
            "read" => Some(Self::Read),
            "admin" => Some(Self::Admin),
            _ => None,
        }
    }

    /// `admin` implies `read`; nothing else implies anything.
    pub fn grants(self, needed: Scope) -> bool {
        self == needed || (self == Self::Admin && needed == Self::Read)
    }
}

/// Event types a track key may post when its entry names none.
pub const DEFAULT_TRACK_TYPES: [&str; 3] = ["PAGE_VIEW", "EMAIL_OPEN", "FORM_SUBMISSION"];

/// What a track key may do: post from these origins, events of these types.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrackPolicy {
    origins: Vec<String>,
    types: Vec<String>,
}

impl TrackPolicy {
    /// `<origin> <origin>...[;types=<TYPE> <TYPE>...]`, the part after `track=`.
    fn parse(spec: &str) -> Result<Self, String> {
        let (origins, types) = match spec.split_once(';') {
            Some((origins, types)) => {
                let types = types
                    .trim()
                    .strip_prefix("types=")
                    .ok_or("after ';' comes types=<TYPE> <TYPE>...")?;
                (origins, Some(types))
            }
            None => (spec, None),
        };
        let origins: Vec<String> = origins
            .split_whitespace()
            .map(|o| {
                let origin = o.to_ascii_lowercase();
                let host = origin
                    .strip_prefix("https://")
                    .or_else(|| origin.strip_prefix("http://"))
                    .filter(|h| {
                        !h.is_empty()
                            && h.bytes()
                                .all(|b| b.is_ascii_alphanumeric() || b".-:".contains(&b))
                    });
                host.map(|_| origin.clone())
                    .ok_or_else(|| format!("{o:?} is not an origin (scheme://host[:port])"))
            })
            .collect::<Result<_, _>>()?;
        if origins.is_empty() {
            return Err("a track key needs its origins: track=https://www.example.com".into());
        }
        let types: Vec<String> = match types {
            None => DEFAULT_TRACK_TYPES
                .iter()
                .map(|t| (*t).to_owned())
                .collect(),
            Some(list) => list.split_whitespace().map(str::to_owned).collect(),
        };
        let valid_type = |t: &String| {
            t.len() <= 64
                && t.starts_with(|c: char| c.is_ascii_alphabetic())
                && t.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"_.:-".contains(&b))
        };
        if types.is_empty() || !types.iter().all(valid_type) {
            return Err("types= lists event types such as PAGE_VIEW".into());
        }
        Ok(Self { origins, types })
    }

    /// Whether a request with this `Origin` header may use the key (exactly one of its origins).
    pub fn allows_origin(&self, origin: Option<&str>) -> bool {
        origin.is_some_and(|o| {
            let o = o.to_ascii_lowercase();
            self.origins.contains(&o)
        })
    }

    pub fn allows_type(&self, event_type: &str) -> bool {
        self.types.iter().any(|t| t == event_type)
    }
}

/// Who presented a key: its scope, and a track key's policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub scope: Scope,
    pub track: Option<Arc<TrackPolicy>>,
}

#[derive(Clone, Default)]
pub struct ApiKeys {
    keys: Vec<([u8; 32], Caller)>,
}

impl std::fmt::Debug for ApiKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ApiKeys({} keys)", self.keys.len())
    }
}

impl ApiKeys {
    /// `<sha256 hex>:<scope>` pairs separated by commas.
    pub fn parse(spec: &str) -> Result<Self, String> {
        let mut keys = Vec::new();
        for (i, entry) in spec
            .split(',')
            .map(str::trim)
            .filter(|e| !e.is_empty())
            .enumerate()
        {
            let (digest, scope) = entry
                .split_once(':')
                .ok_or_else(|| format!("entry {} is not <sha256 hex>:<scope>", i + 1))?;
            let mut bytes = [0u8; 32];
            hex::decode_to_slice(digest.trim(), &mut bytes)
                .map_err(|_| format!("entry {} is not a 64-character SHA-256 hex digest", i + 1))?;
            let scope = scope.trim();
            let caller = match scope.strip_prefix("track") {
                Some(rest) => {
                    let policy = rest
                        .strip_prefix('=')
                        .ok_or_else(|| {
                            "a track key needs its origins: track=https://www.example.com".into()
                        })
                        .and_then(TrackPolicy::parse)
                        .map_err(|e| format!("entry {}: {e}", i + 1))?;
                    Caller {
                        scope: Scope::Track,
                        track: Some(Arc::new(policy)),
                    }
                }
                None => Caller {
                    scope: Scope::parse(scope).ok_or_else(|| {
                        format!(
                            "entry {} has an unknown scope (ingest, read, admin, track=<origins>)",
                            i + 1
                        )
                    })?,
                    track: None,
                },
            };
            keys.push((bytes, caller));
        }
        Ok(Self { keys })
    }

    /// The caller a key names: 401 when it is unknown.
    pub fn caller(&self, key: &str) -> Result<Caller, ApiError> {
        let presented: [u8; 32] = Sha256::digest(key.as_bytes()).into();
        // Every configured digest is compared, so timing does not reveal which one matched.
        let mut found = None;
        for (digest, caller) in &self.keys {
            if bool::from(digest.ct_eq(&presented)) {
                found = Some(caller);
            }
        }
        found.cloned().ok_or(ApiError::Unauthorized)
    }

    pub fn digest(key: &str) -> String {
        hex::encode(Sha256::digest(key.as_bytes()))
    }

    /// Checks `Authorization: Bearer <key>` for `needed`: 401 when missing or unknown, 403 when
    /// the key's scope does not cover the route.
    pub fn authorize(&self, authorization: Option<&str>, needed: Scope) -> Result<Scope, ApiError> {
        let scope = self.caller(bearer(authorization)?)?.scope;
        if scope.grants(needed) {
            Ok(scope)
        } else {
            Err(ApiError::Forbidden(
                "this key's scope does not allow this route",
            ))
        }
    }
}

/// The key of an `Authorization: Bearer <key>` header: 401 when there is none.
pub fn bearer(authorization: Option<&str>) -> Result<&str, ApiError> {
    authorization
        .and_then(|h| {
            h.strip_prefix("Bearer ")
                .or_else(|| h.strip_prefix("bearer "))
        })
        .map(str::trim)
        .filter(|k| !k.is_empty())
        .ok_or(ApiError::Unauthorized)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> ApiKeys {
        let spec = format!(
            "{}:ingest, {}:admin",
            ApiKeys::digest("ingest-key"),
            ApiKeys::digest("admin-key")
        );
        ApiKeys::parse(&spec).unwrap_or_default()
    }

    #[test]
    fn scopes() {
        let k = keys();
        assert_eq!(
            k.authorize(Some("Bearer ingest-key"), Scope::Ingest).ok(),
            Some(Scope::Ingest)
        );
        assert_eq!(
            k.authorize(Some("Bearer admin-key"), Scope::Read).ok(),
            Some(Scope::Admin)
        );
        assert_eq!(
            k.authorize(Some("Bearer admin-key"), Scope::Ingest)
                .map_err(|e| e.status()),
            Err(403)
        );
        assert_eq!(
            k.authorize(Some("Bearer ingest-key"), Scope::Read)
                .map_err(|e| e.status()),
            Err(403)
        );
        assert_eq!(
            k.authorize(Some("Bearer nope"), Scope::Ingest)
                .map_err(|e| e.status()),
            Err(401)
        );
        assert_eq!(
            k.authorize(None, Scope::Ingest).map_err(|e| e.status()),
            Err(401)
        );
        assert_eq!(
            k.authorize(Some("Basic abc"), Scope::Ingest)
                .map_err(|e| e.status()),
            Err(401)
        );
    }

    #[test]
    fn parse_rejects_plain_keys_and_bad_scopes() {
        assert!(ApiKeys::parse("secret:ingest").is_err());
        assert!(ApiKeys::parse(&format!("{}:owner", ApiKeys::digest("k"))).is_err());
        assert!(ApiKeys::parse("").is_ok_and(|k| k.keys.is_empty()));
    }

    #[test]
    fn track_keys_carry_their_origins_and_types() -> Result<(), String> {
        let keys = ApiKeys::parse(&format!(
            "{}:track=https://www.example.com http://localhost:8080, {}:track=https://shop.example;types=PAGE_VIEW ad.click",
            ApiKeys::digest("pk-1"),
            ApiKeys::digest("pk-2")
        ))?;
        let one = keys.caller("pk-1").map_err(|e| e.to_string())?;
        assert_eq!(one.scope, Scope::Track);
        let policy = one.track.ok_or("no policy")?;
        assert!(policy.allows_origin(Some("https://www.example.com")));
        assert!(policy.allows_origin(Some("HTTP://LOCALHOST:8080")));
        for refused in [
            None,
            Some("https://example.com"),
            Some("https://www.example.com.evil.test"),
            Some("http://www.example.com"),
            Some("null"),
        ] {
            assert!(!policy.allows_origin(refused), "{refused:?}");
        }
        for t in DEFAULT_TRACK_TYPES {
            assert!(policy.allows_type(t));
        }
        assert!(!policy.allows_type("PURCHASE"));
        let two = keys.caller("pk-2").map_err(|e| e.to_string())?;
        let policy = two.track.ok_or("no policy")?;
        assert!(policy.allows_type("ad.click") && !policy.allows_type("EMAIL_OPEN"));
        // A track key reaches no other scope's routes.
        assert_eq!(
            keys.authorize(Some("Bearer pk-1"), Scope::Ingest)
                .map_err(|e| e.status()),
            Err(403)
        );

        for bad in [
            "track",
            "track=",
            "track=www.example.com",
            "track=https://a.example/path",
            "track=https://a.example;PAGE_VIEW",
            "track=https://a.example;types=",
            "track=https://a.example;types=1BAD",
        ] {
            let spec = format!("{}:{bad}", ApiKeys::digest("k"));
            assert!(ApiKeys::parse(&spec).is_err(), "{bad}");
        }
        Ok(())
    }
}
