//! Bearer keys, configured as SHA-256 digests with a scope each, compared in constant time.

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::error::ApiError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    Ingest,
    Read,
    Admin,
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

#[derive(Clone, Default)]
pub struct ApiKeys {
    keys: Vec<([u8; 32], Scope)>,
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
            let scope = Scope::parse(scope.trim()).ok_or_else(|| {
                format!("entry {} has an unknown scope (ingest, read, admin)", i + 1)
            })?;
            keys.push((bytes, scope));
        }
        Ok(Self { keys })
    }

    pub fn digest(key: &str) -> String {
        hex::encode(Sha256::digest(key.as_bytes()))
    }

    /// Checks `Authorization: Bearer <key>` for `needed`: 401 when missing or unknown, 403 when
    /// the key's scope does not cover the route.
    pub fn authorize(&self, authorization: Option<&str>, needed: Scope) -> Result<Scope, ApiError> {
        let key = authorization
            .and_then(|h| {
                h.strip_prefix("Bearer ")
                    .or_else(|| h.strip_prefix("bearer "))
            })
            .map(str::trim)
            .filter(|k| !k.is_empty())
            .ok_or(ApiError::Unauthorized)?;
        let presented: [u8; 32] = Sha256::digest(key.as_bytes()).into();
        // Every configured digest is compared, so timing does not reveal which one matched.
        let mut found = None;
        for (digest, scope) in &self.keys {
            if bool::from(digest.ct_eq(&presented)) {
                found = Some(*scope);
            }
        }
        let scope = found.ok_or(ApiError::Unauthorized)?;
        if scope.grants(needed) {
            Ok(scope)
        } else {
            Err(ApiError::Forbidden(
                "this key's scope does not allow this route",
            ))
        }
    }
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
}
