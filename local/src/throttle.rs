//! API Gateway's throttling, as the template declares it on the HTTP API: a token bucket per
//! route (`DefaultRouteSettings`, overridden per route key by `RouteSettings`), `burst` tokens
//! deep, refilled at `rate` per second. A request that finds the bucket empty is answered `429`
//! without reaching the function.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use serde_yaml::Value;

use crate::functions::{resolve, LocalResources};
use crate::template::http_api_properties;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Throttle {
    /// Requests per second, sustained.
    pub rate: f64,
    /// Requests at once (the bucket's depth).
    pub burst: u32,
}

/// The template's throttling: the default and the route keys' own.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Throttling {
    pub default: Option<Throttle>,
    pub routes: HashMap<String, Throttle>,
}

impl Throttling {
    /// Reads the first `AWS::Serverless::HttpApi` of the template (parameters resolved).
    pub fn from_template(text: &str, resources: &LocalResources<'_>) -> Result<Self> {
        let doc: Value = serde_yaml::from_str(text)?;
        let Some(props) = http_api_properties(&doc) else {
            return Ok(Self::default());
        };
        let settings = |v: &Value, what: &str| -> Result<Option<Throttle>> {
            let number = |key: &str| -> Result<Option<f64>> {
                v.get(key)
                    .map(|n| {
                        resolve(n, resources)
                            .with_context(|| format!("{what}.{key}"))?
                            .parse::<f64>()
                            .with_context(|| format!("{what}.{key} is not a number"))
                    })
                    .transpose()
            };
            match (
                number("ThrottlingRateLimit")?,
                number("ThrottlingBurstLimit")?,
            ) {
                (None, None) => Ok(None),
                (rate, burst) => Ok(Some(Throttle {
                    rate: rate.unwrap_or(f64::INFINITY),
                    burst: burst.map_or(u32::MAX, |b| b.clamp(0.0, f64::from(u32::MAX)) as u32),
                })),
            }
        };
        let default = match props.get("DefaultRouteSettings") {
            Some(v) => settings(v, "DefaultRouteSettings")?,
            None => None,
        };
        let mut routes = HashMap::new();
        for (key, v) in props
            .get("RouteSettings")
            .and_then(Value::as_mapping)
            .into_iter()
            .flatten()
        {
            let key = key
                .as_str()
                .context("a RouteSettings key is not a route key")?;
            if let Some(t) = settings(v, &format!("RouteSettings.{key}"))? {
                routes.insert(key.to_owned(), t);
            }
        }
        Ok(Self { default, routes })
    }

    fn for_route(&self, route_key: &str) -> Option<Throttle> {
        self.routes.get(route_key).copied().or(self.default)
    }
}

/// The buckets of a running gateway.
#[derive(Debug, Default)]
pub struct Buckets {
    throttling: Throttling,
    /// Route key → (tokens, last refill).
    state: Mutex<HashMap<String, (f64, Instant)>>,
}

impl Buckets {
    pub fn new(throttling: Throttling) -> Self {
        Self {
            throttling,
            state: Mutex::default(),
        }
    }

    /// Takes a token for `route_key`, or says how long until one is there.
    pub fn take(&self, route_key: &str) -> Result<(), Duration> {
        let Some(limit) = self.throttling.for_route(route_key) else {
            return Ok(());
        };
        let now = Instant::now();
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let (tokens, last) = state
            .entry(route_key.to_owned())
            .or_insert((f64::from(limit.burst), now));
        let refilled = (*tokens + now.duration_since(*last).as_secs_f64() * limit.rate)
            .min(f64::from(limit.burst));
        *last = now;
        if refilled >= 1.0 {
            *tokens = refilled - 1.0;
            return Ok(());
        }
        *tokens = refilled;
        let wait = if limit.rate > 0.0 {
            (1.0 - refilled) / limit.rate
        } else {
            60.0
        };
        Err(Duration::from_secs_f64(wait.clamp(0.0, 3600.0)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_allows_its_burst_then_its_rate() {
        let buckets = Buckets::new(Throttling {
            default: Some(Throttle {
                rate: 10.0,
                burst: 3,
            }),
            routes: HashMap::from([(
                "POST /v1/events".to_owned(),
                Throttle {
                    rate: 0.0,
                    burst: 1,
                },
            )]),
        });
        for _ in 0..3 {
            assert!(buckets.take("GET /v1/leads").is_ok());
        }
        let wait = buckets.take("GET /v1/leads").err();
        assert!(
            wait.is_some_and(|w| w <= Duration::from_millis(100)),
            "{wait:?}"
        );
        std::thread::sleep(Duration::from_millis(120));
        assert!(buckets.take("GET /v1/leads").is_ok(), "refilled at 10/s");
        // Its own setting: one request, then none.
        assert!(buckets.take("POST /v1/events").is_ok());
        assert!(buckets.take("POST /v1/events").is_err());
        // Routes have separate buckets.
        assert!(buckets.take("GET /v1/rules").is_ok());
    }

    #[test]
    fn the_projects_template_declares_default_and_ingest_throttling() -> Result<()> {
        let text = std::fs::read_to_string(crate::repo_root().join("template.yaml"))?;
        let doc: Value = serde_yaml::from_str(&text)?;
        let parameters: HashMap<String, String> = doc["Parameters"]
            .as_mapping()
            .into_iter()
            .flatten()
            .filter_map(|(k, v)| {
                Some((
                    k.as_str()?.to_owned(),
                    crate::template::literal(&v["Default"])?,
                ))
            })
            .collect();
        let empty = HashMap::new();
        let attributes = HashMap::new();
        let throttling = Throttling::from_template(
            &text,
            &LocalResources {
                parameters: &parameters,
                refs: &empty,
                attributes: &attributes,
            },
        )?;
        assert!(throttling.default.is_some());
        for route in [
            "POST /v1/events",
            "POST /v1/events/batch",
            "POST /v1/webhooks/{source}",
        ] {
            assert!(throttling.routes.contains_key(route), "{route}");
        }
        Ok(())
    }
}
