//! The `query` function: the read routes of the HTTP API (aggregations, rules and health) and
//! the rule changes admins make.

mod aggregations;
mod params;
mod reports;
mod rules;

use serde_json::json;
use tracing::info;

use crate::aggregation::AggregateReader;
use crate::auth::{ApiKeys, Scope};
use crate::error::ApiError;
use crate::http::{serve, HttpRequest, HttpResponse};
use crate::observability::Metrics;
use crate::scoring::RuleStore;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Route {
    Health,
    Aggregations,
    Top,
    EventsReport,
    RevenueReport,
    DemographicsReport,
    Rules,
    /// The event type, as the path gives it.
    PutRule(String),
}

impl Route {
    fn name(&self) -> &'static str {
        match self {
            Self::Health => "GET /health",
            Self::Aggregations => "GET /v1/aggregations",
            Self::Top => "GET /v1/aggregations/top",
            Self::EventsReport => "GET /v1/reports/events",
            Self::RevenueReport => "GET /v1/reports/revenue",
            Self::DemographicsReport => "GET /v1/reports/demographics",
            Self::Rules => "GET /v1/rules",
            Self::PutRule(_) => "PUT /v1/rules/{eventType}",
        }
    }

    /// Who may call the route.
    fn scope(&self) -> Option<Scope> {
        match self {
            Self::Health => None,
            Self::Aggregations
            | Self::Top
            | Self::EventsReport
            | Self::RevenueReport
            | Self::DemographicsReport
            | Self::Rules => Some(Scope::Read),
            Self::PutRule(_) => Some(Scope::Admin),
        }
    }

    fn resolve(method: &str, path: &str) -> Result<Self, ApiError> {
        let path = path
            .strip_suffix('/')
            .filter(|p| !p.is_empty())
            .unwrap_or(path);
        let (route, allow) = match path {
            "/health" | "/health/live" => (Self::Health, "GET"),
            "/v1/aggregations" => (Self::Aggregations, "GET"),
            "/v1/aggregations/top" | "/v1/aggregations/top-performing" => (Self::Top, "GET"),
            "/v1/reports/events" => (Self::EventsReport, "GET"),
            "/v1/reports/revenue" => (Self::RevenueReport, "GET"),
            "/v1/reports/demographics" => (Self::DemographicsReport, "GET"),
            "/v1/rules" => (Self::Rules, "GET"),
            _ => match path.strip_prefix("/v1/rules/") {
                Some(ty) if !ty.is_empty() && !ty.contains('/') => {
                    (Self::PutRule(ty.to_owned()), "PUT")
                }
                _ => return Err(ApiError::NotFound),
            },
        };
        if method == allow {
            Ok(route)
        } else {
            Err(ApiError::MethodNotAllowed { allow })
        }
    }
}

/// The query function's logic, generic over the aggregate reader and the rule store.
pub struct QueryApi<A, R> {
    keys: ApiKeys,
    aggregates: A,
    rules: R,
}

impl<A: AggregateReader, R: RuleStore> QueryApi<A, R> {
    pub fn new(keys: ApiKeys, aggregates: A, rules: R) -> Self {
        Self {
            keys,
            aggregates,
            rules,
        }
    }

    pub async fn handle(&self, request: HttpRequest) -> HttpResponse {
        serve("query", &request, async |_, metrics| {
            self.route(&request, metrics).await
        })
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
                .authorize(request.header("authorization"), scope)?;
        }
        let response = match &route {
            Route::Health => HttpResponse::json(200, &json!({"status": "ok"})),
            Route::Aggregations => aggregations::aggregations(&self.aggregates, request).await?,
            Route::Top => aggregations::top(&self.aggregates, request).await?,
            Route::EventsReport => reports::events(&self.aggregates, request).await?,
            Route::RevenueReport => reports::revenue(&self.aggregates, request).await?,
            Route::DemographicsReport => reports::demographics(&self.aggregates, request).await?,
            Route::Rules => rules::get_rules(&self.rules).await?,
            Route::PutRule(event_type) => rules::put(&self.rules, event_type, request).await?,
        };
        metrics.count("Queries", 1);
        Ok(response)
    }
}

#[cfg(test)]
mod tests;
