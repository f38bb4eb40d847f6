//! API Gateway's CORS for HTTP APIs, as the template's `CorsConfiguration` declares it:
//! - a preflight (`OPTIONS` with `Origin` and `Access-Control-Request-Method`) is answered by the
//!   gateway itself, `204`, with the configured headers when the origin, method and headers are
//!   allowed and none otherwise; no function is invoked;
//! - a request with an allowed `Origin` gets `Access-Control-Allow-Origin` (and the exposed
//!   headers, and credentials when allowed) added to the function's answer;
//! - CORS headers a function sets are dropped: the configuration is the only source.

use anyhow::{anyhow, Context, Result};
use axum::body::Body;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Response, StatusCode};
use serde_yaml::Value;

use crate::functions::{chosen, resolve, LocalResources};
use crate::template::{http_api_properties, literal};

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Cors {
    pub allow_origins: Vec<String>,
    pub allow_methods: Vec<String>,
    pub allow_headers: Vec<String>,
    pub expose_headers: Vec<String>,
    pub max_age: Option<u64>,
    pub allow_credentials: bool,
}

impl Cors {
    /// The first `AWS::Serverless::HttpApi`'s `CorsConfiguration` under the stack's conditions
    /// and parameters; `None` when it has none.
    pub fn from_template(text: &str, resources: &LocalResources<'_>) -> Result<Option<Self>> {
        let doc: Value = serde_yaml::from_str(text)?;
        let conditions = doc.get("Conditions").and_then(Value::as_mapping);
        let Some(config) = http_api_properties(&doc).and_then(|p| p.get("CorsConfiguration"))
        else {
            return Ok(None);
        };
        let Some(config) = chosen(config, conditions, resources)? else {
            return Ok(None);
        };
        let list = |key: &str| -> Result<Vec<String>> {
            config
                .get(key)
                .map(|v| strings(v, resources).with_context(|| format!("CorsConfiguration.{key}")))
                .transpose()
                .map(Option::unwrap_or_default)
        };
        let scalar = |key: &str| -> Result<Option<String>> {
            config
                .get(key)
                .map(|v| resolve(v, resources).with_context(|| format!("CorsConfiguration.{key}")))
                .transpose()
        };
        Ok(Some(Self {
            allow_origins: list("AllowOrigins")?,
            allow_methods: list("AllowMethods")?,
            allow_headers: list("AllowHeaders")?,
            expose_headers: list("ExposeHeaders")?,
            max_age: scalar("MaxAge")?
                .map(|s| s.parse().context("CorsConfiguration.MaxAge"))
                .transpose()?,
            allow_credentials: scalar("AllowCredentials")?.as_deref() == Some("true"),
        }))
    }

    /// `*`, an exact origin, or a scheme wildcard (`https://*`), as API Gateway matches them.
    fn allows_origin(&self, origin: &str) -> bool {
        self.allow_origins.iter().any(|allowed| {
            allowed == "*"
                || allowed.eq_ignore_ascii_case(origin)
                || allowed
                    .strip_suffix('*')
                    .is_some_and(|scheme| scheme.ends_with("://") && origin.starts_with(scheme))
        })
    }

    fn allows(list: &[String], wanted: &str) -> bool {
        list.iter()
            .any(|a| a == "*" || a.eq_ignore_ascii_case(wanted))
    }

    /// The answer to a preflight, when `headers` make the request one.
    pub fn preflight(&self, method: &str, headers: &HeaderMap) -> Option<Response<Body>> {
        if method != "OPTIONS" {
            return None;
        }
        let origin = header(headers, "origin")?;
        let requested = header(headers, "access-control-request-method")?;
        let mut response = Response::new(Body::empty());
        *response.status_mut() = StatusCode::NO_CONTENT;
        let wanted_headers = header(headers, "access-control-request-headers").unwrap_or("");
        let allowed = self.allows_origin(origin)
            && Self::allows(&self.allow_methods, requested)
            && wanted_headers
                .split(',')
                .map(str::trim)
                .filter(|h| !h.is_empty())
                .all(|h| Self::allows(&self.allow_headers, h));
        if allowed {
            let out = response.headers_mut();
            self.allow_origin(out, origin);
            set(
                out,
                "access-control-allow-methods",
                &self.allow_methods.join(","),
            );
            set(
                out,
                "access-control-allow-headers",
                &self.allow_headers.join(","),
            );
            if let Some(age) = self.max_age {
                set(out, "access-control-max-age", &age.to_string());
            }
        }
        Some(response)
    }

    /// Replaces any CORS headers of the function's answer with the configuration's, for an
    /// allowed `origin`.
    pub fn decorate(&self, origin: Option<&str>, response: &mut Response<Body>) {
        let out = response.headers_mut();
        let theirs: Vec<HeaderName> = out
            .keys()
            .filter(|k| k.as_str().starts_with("access-control-"))
            .cloned()
            .collect();
        for name in theirs {
            out.remove(name);
        }
        let Some(origin) = origin.filter(|o| self.allows_origin(o)) else {
            return;
        };
        self.allow_origin(out, origin);
        if !self.expose_headers.is_empty() {
            set(
                out,
                "access-control-expose-headers",
                &self.expose_headers.join(","),
            );
        }
    }

    fn allow_origin(&self, out: &mut HeaderMap, origin: &str) {
        let value = if self.allow_origins.iter().any(|o| o == "*") && !self.allow_credentials {
            "*"
        } else {
            origin
        };
        set(out, "access-control-allow-origin", value);
        if self.allow_credentials {
            set(out, "access-control-allow-credentials", "true");
        }
        out.append(axum::http::header::VARY, HeaderValue::from_static("Origin"));
    }
}

fn header<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

fn set(headers: &mut HeaderMap, name: &'static str, value: &str) {
    if let Ok(value) = HeaderValue::from_str(value) {
        headers.insert(HeaderName::from_static(name), value);
    }
}

/// A list of strings: a sequence of values, or `!Split [delimiter, value]`.
fn strings(value: &Value, resources: &LocalResources<'_>) -> Result<Vec<String>> {
    // A tag first: serde_yaml reads a tagged sequence as a plain one.
    if let Value::Tagged(tagged) = value {
        if tagged.tag != "Split" {
            return Err(anyhow!("expected a list or !Split, got !{}", tagged.tag));
        }
        let args = tagged
            .value
            .as_sequence()
            .filter(|a| a.len() == 2)
            .ok_or_else(|| anyhow!("!Split takes a delimiter and a value"))?;
        let delimiter = literal(&args[0]).ok_or_else(|| anyhow!("!Split's delimiter"))?;
        let text = resolve(&args[1], resources)?;
        return Ok(text
            .split(delimiter.as_str())
            .map(str::to_owned)
            .filter(|s| !s.is_empty())
            .collect());
    }
    value
        .as_sequence()
        .ok_or_else(|| anyhow!("expected a list or !Split, got {value:?}"))?
        .iter()
        .map(|v| resolve(v, resources))
        .collect()
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn project_cors(origins: &str) -> Result<Option<Cors>> {
        let text = std::fs::read_to_string(crate::repo_root().join("template.yaml"))?;
        let parameters = HashMap::from([("TrackOrigins".to_owned(), origins.to_owned())]);
        let (refs, attributes) = (HashMap::new(), HashMap::new());
        Cors::from_template(
            &text,
            &LocalResources {
                parameters: &parameters,
                refs: &refs,
                attributes: &attributes,
            },
        )
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            if let Ok(value) = HeaderValue::from_str(value) {
                map.insert(HeaderName::from_static(name), value);
            }
        }
        map
    }

    #[test]
    fn the_project_template_allows_its_track_origins_only() -> Result<()> {
        assert_eq!(project_cors("")?, None, "no origins, no CORS");
        let cors = project_cors("https://shop.example,http://127.0.0.1:8080")?
            .ok_or_else(|| anyhow!("no CORS"))?;
        assert_eq!(
            cors.allow_origins,
            ["https://shop.example", "http://127.0.0.1:8080"]
        );
        assert_eq!(cors.allow_methods, ["POST"]);

        let asked = |origin: &str, method: &str, wanted: &str| {
            cors.preflight(
                "OPTIONS",
                &headers(&[
                    ("origin", origin),
                    ("access-control-request-method", method),
                    ("access-control-request-headers", wanted),
                ]),
            )
        };
        let allowed = asked(
            "https://shop.example",
            "POST",
            "authorization,idempotency-key",
        )
        .ok_or_else(|| anyhow!("not a preflight"))?;
        assert_eq!(allowed.status(), StatusCode::NO_CONTENT);
        assert_eq!(
            header(allowed.headers(), "access-control-allow-origin"),
            Some("https://shop.example")
        );
        assert_eq!(
            header(allowed.headers(), "access-control-max-age"),
            Some("600")
        );
        for (origin, method, wanted) in [
            ("https://evil.example", "POST", "authorization"),
            ("https://shop.example", "DELETE", "authorization"),
            ("https://shop.example", "POST", "x-secret"),
        ] {
            let refused =
                asked(origin, method, wanted).ok_or_else(|| anyhow!("not a preflight"))?;
            assert_eq!(refused.status(), StatusCode::NO_CONTENT);
            assert_eq!(
                header(refused.headers(), "access-control-allow-origin"),
                None,
                "{origin} {method} {wanted}"
            );
        }
        // Not preflights: a plain OPTIONS, and a POST.
        assert!(cors
            .preflight("OPTIONS", &headers(&[("origin", "https://shop.example")]))
            .is_none());
        assert!(cors
            .preflight(
                "POST",
                &headers(&[
                    ("origin", "https://shop.example"),
                    ("access-control-request-method", "POST")
                ])
            )
            .is_none());

        // Answers: the function's own CORS headers are replaced by the configuration's.
        let answer = || {
            let mut response = Response::new(Body::empty());
            set(response.headers_mut(), "access-control-allow-origin", "*");
            response
        };
        let mut to_shop = answer();
        cors.decorate(Some("https://shop.example"), &mut to_shop);
        assert_eq!(
            header(to_shop.headers(), "access-control-allow-origin"),
            Some("https://shop.example")
        );
        assert_eq!(
            header(to_shop.headers(), "access-control-expose-headers"),
            Some("x-correlation-id")
        );
        let mut to_evil = answer();
        cors.decorate(Some("https://evil.example"), &mut to_evil);
        assert_eq!(
            header(to_evil.headers(), "access-control-allow-origin"),
            None
        );
        Ok(())
    }

    #[test]
    fn wildcards_match_as_api_gateway_matches_them() {
        let cors = Cors {
            allow_origins: vec!["https://*".into()],
            ..Cors::default()
        };
        assert!(cors.allows_origin("https://a.example"));
        assert!(!cors.allows_origin("http://a.example"));
    }
}
