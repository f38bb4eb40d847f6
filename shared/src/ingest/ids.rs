//! Which event ids a route may store, and the ids it derives for items that carry none.
//!
//! - Each webhook route owns an id prefix: `fb:` (Facebook), `tt:` (TikTok), `wh:<source>:`
//!   (the generic route). A webhook event's id always carries its route's prefix, and the API
//!   routes refuse ids that start with any reserved prefix, so no key holder can post an id
//!   first and make a real webhook event a silent duplicate.
//! - With an `Idempotency-Key`, API items without an `eventId` get `ik:<hash>.<position>`: the
//!   hash covers the caller's key, the route and the idempotency key, so the same request
//!   retried derives the same ids (and stores nothing new), while another caller's or another
//!   route's use of the same key derives different ones.
//! - Webhook events without an id get `<prefix><hash of the signed body>.<position>`, so a
//!   redelivered webhook stores nothing new.

use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::error::ApiError;
use crate::event::FieldError;

/// Prefixes no client may choose: each belongs to the route that derives or namespaces it.
pub const RESERVED_PREFIXES: &[&str] = &["fb:", "tt:", "wh:", "ik:"];

/// Header of a client's retry key.
pub const IDEMPOTENCY_HEADER: &str = "idempotency-key";

/// Hex digits of a hash kept in a derived id (128 bits).
const HASH_HEX: usize = 32;

/// How a route treats the ids of its items.
#[derive(Debug, Clone)]
pub(super) enum IdPolicy {
    /// The API routes: reserved prefixes refused; ids derived from the idempotency key when
    /// one was sent (else the item gets a fresh UUIDv7 when normalized).
    Client { derived_prefix: Option<String> },
    /// A webhook route: every id carries `prefix`; missing ids derive from the signed body.
    Webhook { prefix: String, derived: String },
}

impl IdPolicy {
    /// The API routes' policy: `idempotency_key` is the header's value, if sent (1-128
    /// printable ASCII characters, else 400 naming the header).
    pub(super) fn client(
        authorization: Option<&str>,
        route: &str,
        idempotency_key: Option<&str>,
    ) -> Result<Self, ApiError> {
        let Some(key) = idempotency_key else {
            return Ok(Self::Client {
                derived_prefix: None,
            });
        };
        let printable =
            !key.is_empty() && key.len() <= 128 && key.bytes().all(|b| (0x20..0x7f).contains(&b));
        if !printable {
            return Err(ApiError::validation(vec![FieldError::new(
                "Idempotency-Key",
                "must be 1-128 printable ASCII characters",
            )]));
        }
        let caller = Sha256::digest(authorization.unwrap_or_default().as_bytes());
        let hash = hash_hex(&[&caller, route.as_bytes(), key.as_bytes()]);
        Ok(Self::Client {
            derived_prefix: Some(format!("ik:{hash}")),
        })
    }

    /// A webhook route's policy over the raw body its signature covered.
    pub(super) fn webhook(prefix: String, signed_body: &[u8]) -> Self {
        let derived = format!("{prefix}{}", hash_hex(&[signed_body]));
        Self::Webhook { prefix, derived }
    }

    /// Applies the policy to one item before it is normalized: refuses a reserved id, or
    /// prefixes or derives one. Non-object items and ids that are not strings are left for
    /// normalization to refuse.
    pub(super) fn apply(&self, item: &mut Value, position: usize) -> Result<(), FieldError> {
        let Value::Object(fields) = item else {
            return Ok(());
        };
        let given = match fields.get("eventId") {
            None | Some(Value::Null) => None,
            Some(Value::String(id)) => Some(id.clone()),
            Some(_) => return Ok(()),
        };
        let id = match (self, given) {
            (Self::Client { .. }, Some(id)) => {
                if let Some(prefix) = RESERVED_PREFIXES.iter().find(|p| id.starts_with(**p)) {
                    return Err(FieldError::new(
                        "/eventId",
                        format!("must not start with {prefix}: that prefix is reserved for ids Tally derives"),
                    ));
                }
                return Ok(());
            }
            (
                Self::Client {
                    derived_prefix: None,
                },
                None,
            ) => return Ok(()),
            (
                Self::Client {
                    derived_prefix: Some(prefix),
                },
                None,
            ) => format!("{prefix}.{position}"),
            (Self::Webhook { prefix, .. }, Some(id)) => {
                let id = format!("{prefix}{id}");
                if id.len() > 128 {
                    return Err(FieldError::new(
                        "/eventId",
                        format!("with this route's prefix {prefix} must be at most 128 characters"),
                    ));
                }
                id
            }
            (Self::Webhook { derived, .. }, None) => format!("{derived}.{position}"),
        };
        fields.insert("eventId".into(), Value::String(id));
        Ok(())
    }
}

fn hash_hex(parts: &[&[u8]]) -> String {
    let mut hasher = Sha256::new();
    for part in parts {
        // Length-prefixed, so ("ab", "c") and ("a", "bc") hash differently.
        hasher.update((part.len() as u64).to_be_bytes());
        hasher.update(part);
    }
    let mut hex = hex::encode(hasher.finalize());
    hex.truncate(HASH_HEX);
    hex
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn id_after(policy: &IdPolicy, mut item: Value, position: usize) -> Result<Value, String> {
        policy
            .apply(&mut item, position)
            .map(|()| item["eventId"].clone())
            .map_err(|e| e.message.into_owned())
    }

    #[test]
    fn api_routes_refuse_every_reserved_prefix_and_keep_other_ids() -> Result<(), ApiError> {
        let policy = IdPolicy::client(Some("Bearer k"), "batch", None)?;
        for prefix in RESERVED_PREFIXES {
            let id = format!("{prefix}123");
            assert!(
                id_after(&policy, json!({"eventId": id}), 0).is_err(),
                "{id}"
            );
        }
        assert_eq!(
            id_after(&policy, json!({"eventId": "FB:1"}), 0),
            Ok(json!("FB:1"))
        );
        assert_eq!(id_after(&policy, json!({"type": "A"}), 0), Ok(Value::Null));
        Ok(())
    }

    #[test]
    fn idempotency_keys_derive_the_same_ids_per_caller_route_and_position() -> Result<(), ApiError>
    {
        let derive = |auth: &str, route: &str, key: &str, position: usize| {
            IdPolicy::client(Some(auth), route, Some(key))
                .ok()
                .and_then(|p| id_after(&p, json!({"type": "A"}), position).ok())
        };
        let first = derive("Bearer a", "batch", "retry-1", 3);
        assert_eq!(first, derive("Bearer a", "batch", "retry-1", 3));
        let id = first.as_ref().and_then(Value::as_str).unwrap_or_default();
        assert!(
            id.starts_with("ik:") && id.ends_with(".3") && id.len() == 3 + 32 + 2,
            "{id}"
        );
        for other in [
            derive("Bearer b", "batch", "retry-1", 3),
            derive("Bearer a", "csv", "retry-1", 3),
            derive("Bearer a", "batch", "retry-2", 3),
            derive("Bearer a", "batch", "retry-1", 4),
        ] {
            assert_ne!(other, first);
        }
        // Items with their own id keep it.
        let policy = IdPolicy::client(Some("Bearer a"), "batch", Some("k"))?;
        assert_eq!(
            id_after(&policy, json!({"eventId": "mine"}), 0),
            Ok(json!("mine"))
        );
        for bad in ["", "tab\there", "é", &"k".repeat(129)] {
            assert_eq!(
                IdPolicy::client(None, "batch", Some(bad))
                    .map(|_| ())
                    .map_err(|e| e.status()),
                Err(400),
                "{bad:?}"
            );
        }
        Ok(())
    }

    #[test]
    fn webhook_ids_carry_the_route_prefix_and_derive_from_the_signed_body() {
        let policy = IdPolicy::webhook("wh:shop:".into(), b"[1]");
        assert_eq!(
            id_after(&policy, json!({"eventId": "o-1"}), 0),
            Ok(json!("wh:shop:o-1"))
        );
        let derived = id_after(&policy, json!({}), 2);
        assert_eq!(
            derived,
            id_after(&IdPolicy::webhook("wh:shop:".into(), b"[1]"), json!({}), 2)
        );
        assert_ne!(
            derived,
            id_after(&IdPolicy::webhook("wh:shop:".into(), b"[2]"), json!({}), 2)
        );
        assert!(derived.is_ok_and(|d| d
            .as_str()
            .is_some_and(|d| d.starts_with("wh:shop:") && d.ends_with(".2"))));
        let long = "x".repeat(125);
        assert!(id_after(&policy, json!({"eventId": long}), 0).is_err());
        // Not an object, or an id that is not a string: left for the event rules to refuse.
        assert_eq!(id_after(&policy, json!({"eventId": 5}), 0), Ok(json!(5)));
        assert!(policy.apply(&mut json!([1]), 0).is_ok());
    }
}
