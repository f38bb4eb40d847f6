//! The `query` function: the read routes of the HTTP API (aggregations, reports, leads, rules
//! and health) and the rule changes admins make.

pub(crate) mod aggregations;
mod companies;
mod cursor;
mod leads;
mod operations;
pub(crate) mod params;
mod reports;
mod rules;
mod scoring;
mod timeline;

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use serde_json::json;
use tracing::info;

use crate::aggregation::AggregateReader;
use crate::auth::{ApiKeys, Scope};
use crate::counters::CounterSink;
use crate::error::ApiError;
use crate::http::{serve, HttpRequest, HttpResponse};
use crate::observability::Metrics;
use crate::ops::{NamedDependency, NamedQueue, ReadinessCache, READINESS_TTL};
use crate::request_latency::{LatencyBuffer, LatencyStore};
use crate::scoring::{LeadHistory, LeadReader, RuleStore};
use crate::secrets::{Secrets, SecretsCache};

#[derive(Debug, Clone, PartialEq, Eq)]
enum Route {
    Health,
    Ready,
    Metrics,
    Aggregations,
    Top,
    EventsReport,
    RevenueReport,
    DemographicsReport,
    CompaniesReport,
    Leaderboard,
    /// The lead id, percent-decoded.
    Lead(String),
    /// The lead id, as the path gives it.
    Timeline(String),
    Rules,
    /// The event type, as the path gives it.
    PutRule(String),
    Scoring,
    PutScoring,
}

/// The replaced systems' spellings of the read routes, and the v1 route each stands for
/// (README, "Moving from the replaced systems").
const LEGACY_ALIASES: &[(&str, &str)] = &[
    ("/api/aggregations", "/v1/aggregations"),
    ("/api/aggregations/top-performing", "/v1/aggregations/top"),
    ("/api/reports/events", "/v1/reports/events"),
    ("/api/reports/revenue", "/v1/reports/revenue"),
    ("/api/reports/demographics", "/v1/reports/demographics"),
    ("/api/v1/reports/events", "/v1/reports/events"),
    ("/api/v1/reports/revenue", "/v1/reports/revenue"),
    ("/api/v1/reports/demographics", "/v1/reports/demographics"),
    ("/reports/events", "/v1/reports/events"),
    ("/reports/revenue", "/v1/reports/revenue"),
    ("/reports/demographics", "/v1/reports/demographics"),
];

impl Route {
    fn name(&self) -> &'static str {
        match self {
            Self::Health => "GET /health",
            Self::Ready => "GET /health/ready",
            Self::Metrics => "GET /metrics",
            Self::Aggregations => "GET /v1/aggregations",
            Self::Top => "GET /v1/aggregations/top",
            Self::EventsReport => "GET /v1/reports/events",
            Self::RevenueReport => "GET /v1/reports/revenue",
            Self::DemographicsReport => "GET /v1/reports/demographics",
            Self::CompaniesReport => "GET /v1/reports/companies",
            Self::Leaderboard => "GET /v1/leads",
            Self::Lead(_) => "GET /v1/leads/{leadId}",
            Self::Timeline(_) => "GET /v1/leads/{leadId}/timeline",
            Self::Rules => "GET /v1/rules",
            Self::PutRule(_) => "PUT /v1/rules/{eventType}",
            Self::Scoring => "GET /v1/scoring",
            Self::PutScoring => "PUT /v1/scoring",
        }
    }

    /// Who may call the route.
    fn scope(&self) -> Option<Scope> {
        match self {
            Self::Health | Self::Ready => None,
            Self::Metrics
            | Self::Aggregations
            | Self::Top
            | Self::EventsReport
            | Self::RevenueReport
            | Self::DemographicsReport
            | Self::CompaniesReport
            | Self::Leaderboard
            | Self::Lead(_)
            | Self::Timeline(_)
            | Self::Rules
            | Self::Scoring => Some(Scope::Read),
            Self::PutRule(_) | Self::PutScoring => Some(Scope::Admin),
        }
    }

    fn resolve(method: &str, path: &str) -> Result<Self, ApiError> {
        let path = path
            .strip_suffix('/')
            .filter(|p| !p.is_empty())
            .unwrap_or(path);
        let path = LEGACY_ALIASES
            .iter()
            .find(|(alias, _)| *alias == path)
            .map_or(path, |(_, v1)| v1);
        let (route, allow) = match path {
            "/health" | "/health/live" => (Self::Health, "GET"),
            "/health/ready" => (Self::Ready, "GET"),
            "/metrics" => (Self::Metrics, "GET"),
            "/v1/aggregations" => (Self::Aggregations, "GET"),
            "/v1/aggregations/top" | "/v1/aggregations/top-performing" => (Self::Top, "GET"),
            "/v1/reports/events" => (Self::EventsReport, "GET"),
            "/v1/reports/revenue" => (Self::RevenueReport, "GET"),
            "/v1/reports/demographics" => (Self::DemographicsReport, "GET"),
            "/v1/reports/companies" => (Self::CompaniesReport, "GET"),
            "/v1/rules" => (Self::Rules, "GET"),
            "/v1/leads" => (Self::Leaderboard, "GET"),
            "/v1/scoring" => match method {
                "PUT" => (Self::PutScoring, "PUT"),
                "GET" => (Self::Scoring, "GET"),
                _ => return Err(ApiError::MethodNotAllowed { allow: "GET, PUT" }),
            },
            _ => {
                if let Some(ty) = segment(path, "/v1/rules/") {
                    (Self::PutRule(ty), "PUT")
                } else if let Some(id) = path
                    .strip_suffix("/timeline")
                    .and_then(|p| segment(p, "/v1/leads/"))
                {
                    (Self::Timeline(id), "GET")
                } else if let Some(id) = segment(path, "/v1/leads/") {
                    (Self::Lead(id), "GET")
                } else {
                    return Err(ApiError::NotFound);
                }
            }
        };
        if method == allow {
            Ok(route)
        } else {
            Err(ApiError::MethodNotAllowed { allow })
        }
    }
}

/// The one path segment after `prefix`, percent-decoded; `None` when empty, nested or not UTF-8.
fn segment(path: &str, prefix: &str) -> Option<String> {
    crate::http::path_segment(path.strip_prefix(prefix)?)
}

/// What the query routes read and write, each behind its port.
#[derive(Clone)]
pub struct QueryPorts {
    pub aggregates: Arc<dyn AggregateReader>,
    pub rules: Arc<dyn RuleStore>,
    pub leads: Arc<dyn LeadReader>,
    pub history: Arc<dyn LeadHistory>,
    /// The pipeline counters `ingest` and `process` keep.
    pub counters: Arc<dyn CounterSink>,
    /// The HTTP functions' request times by route.
    pub latencies: Arc<dyn LatencyStore>,
    /// The queues `/metrics` reports the depth of.
    pub queues: Vec<NamedQueue>,
    /// What `/health/ready` checks.
    pub dependencies: Vec<NamedDependency>,
}

/// The query function's logic.
pub struct QueryApi {
    keys: SecretsCache,
    ports: QueryPorts,
    readiness: ReadinessCache,
    /// This function's request times by route.
    recorded: Option<LatencyBuffer>,
}

impl QueryApi {
    pub fn new(keys: ApiKeys, ports: QueryPorts) -> Self {
        Self::with_readiness_ttl(keys, ports, READINESS_TTL)
    }

    /// As [`QueryApi::new`], reusing a readiness answer for `ttl` instead of the default.
    pub fn with_readiness_ttl(keys: ApiKeys, ports: QueryPorts, ttl: Duration) -> Self {
        Self {
            keys: SecretsCache::inline(Secrets {
                api_keys: keys,
                ..Secrets::default()
            }),
            ports,
            readiness: ReadinessCache::new(ttl),
            recorded: None,
        }
    }

    /// Records each request's time by route in `latencies`.
    pub fn with_latencies(mut self, latencies: LatencyBuffer) -> Self {
        self.recorded = Some(latencies);
        self
    }

    /// Reads the keys from `secrets` instead (only for routes that need a key).
    pub fn with_secrets(mut self, secrets: SecretsCache) -> Self {
        self.keys = secrets;
        self
    }

    pub async fn handle(&self, request: HttpRequest) -> HttpResponse {
        serve(
            "query",
            &request,
            self.recorded.as_ref(),
            async |_, metrics| self.route(&request, metrics).await,
        )
        .await
    }

    async fn route(
        &self,
        request: &HttpRequest,
        metrics: &mut Metrics,
    ) -> Result<HttpResponse, ApiError> {
        let route = Route::resolve(&request.method, &request.path)?;
        info!(route = route.name(), "request");
        metrics.property("route", route.name());
        if let Some(scope) = route.scope() {
            self.keys
                .get()
                .await?
                .api_keys
                .authorize(request.header("authorization"), scope)?;
        }
        let p = &self.ports;
        let aggregates = &*p.aggregates;
        let response = match &route {
            Route::Health => HttpResponse::json(200, &json!({"status": "ok"})),
            Route::Ready => operations::ready(&p.dependencies, &self.readiness, request).await?,
            Route::Metrics => {
                operations::metrics(&*p.counters, &*p.latencies, &p.queues, request).await?
            }
            Route::Aggregations => aggregations::aggregations(aggregates, request).await?,
            Route::Top => aggregations::top(aggregates, request).await?,
            Route::EventsReport => reports::events(aggregates, request).await?,
            Route::RevenueReport => reports::revenue(aggregates, request).await?,
            Route::DemographicsReport => reports::demographics(aggregates, request).await?,
            Route::CompaniesReport => {
                companies::companies(&*p.leads, &*p.rules, request, Utc::now()).await?
            }
            Route::Leaderboard => {
                leads::leaderboard(&*p.leads, &*p.rules, request, Utc::now()).await?
            }
            Route::Lead(id) => {
                leads::lead(&*p.leads, &*p.history, &*p.rules, id, request, Utc::now()).await?
            }
            Route::Timeline(id) => {
                timeline::timeline(&*p.leads, &*p.history, &*p.rules, id, request, Utc::now())
                    .await?
            }
            Route::Rules => rules::get_rules(&*p.rules).await?,
            Route::PutRule(event_type) => rules::put(&*p.rules, event_type, request).await?,
            Route::Scoring => scoring::get(&*p.rules).await?,
            Route::PutScoring => scoring::put(&*p.rules, request).await?,
        };
        metrics.count("Queries", 1);
        Ok(response)
    }
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod fuzz_tests;
