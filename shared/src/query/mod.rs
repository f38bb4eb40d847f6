//! The `query` function: the read routes of the HTTP API (aggregations, and health).

mod aggregations;
mod params;

use chrono::{DateTime, Utc};
use serde_json::json;
use tracing::{info, Instrument};

use crate::aggregation::AggregateReader;
use crate::auth::{ApiKeys, Scope};
use crate::error::ApiError;
use crate::http::{correlation_id, respond, HttpRequest, HttpResponse};
use crate::observability::Metrics;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Route {
    Health,
    Aggregations,
    Top,
}

impl Route {
    fn name(self) -> &'static str {
        match self {
            Self::Health => "GET /health",
            Self::Aggregations => "GET /v1/aggregations",
            Self::Top => "GET /v1/aggregations/top",
        }
    }

    fn resolve(method: &str, path: &str) -> Result<Self, ApiError> {
        let path = path
            .strip_suffix('/')
            .filter(|p| !p.is_empty())
            .unwrap_or(path);
        let route = match path {
            "/health" | "/health/live" => Self::Health,
            "/v1/aggregations" => Self::Aggregations,
            "/v1/aggregations/top" | "/v1/aggregations/top-performing" => Self::Top,
            _ => return Err(ApiError::NotFound),
        };
        if method == "GET" {
            Ok(route)
        } else {
            Err(ApiError::MethodNotAllowed { allow: "GET" })
        }
    }
}

/// The query function's logic, generic over the aggregate reader.
pub struct QueryApi<A> {
    keys: ApiKeys,
    aggregates: A,
}

impl<A: AggregateReader> QueryApi<A> {
    pub fn new(keys: ApiKeys, aggregates: A) -> Self {
        Self { keys, aggregates }
    }

    pub async fn handle(&self, request: HttpRequest) -> HttpResponse {
        self.handle_at(request, Utc::now()).await
    }

    /// Handles a request as of `now`.
    pub async fn handle_at(&self, request: HttpRequest, _now: DateTime<Utc>) -> HttpResponse {
        let correlation_id = correlation_id(&request);
        let span = tracing::info_span!(
            "request",
            correlation_id = %correlation_id,
            request_id = %request.request_id,
        );
        async {
            let mut metrics = Metrics::new("query");
            metrics.property("correlationId", correlation_id.as_str());
            let outcome = self.route(&request, &mut metrics).await;
            let response = respond(outcome, &request.request_id, &correlation_id, &mut metrics);
            metrics.flush();
            response
        }
        .instrument(span)
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
        if route != Route::Health {
            self.keys
                .authorize(request.header("authorization"), Scope::Read)?;
        }
        let response = match route {
            Route::Health => HttpResponse::json(200, &json!({"status": "ok"})),
            Route::Aggregations => aggregations::aggregations(&self.aggregates, request).await?,
            Route::Top => aggregations::top(&self.aggregates, request).await?,
        };
        metrics.count("Queries", 1);
        Ok(response)
    }
}

#[cfg(test)]
mod tests;
